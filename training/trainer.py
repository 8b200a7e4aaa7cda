"""`lichang train`: fine-tune the stance and topic heads (and the top encoder layers) on labeled JSONL.

The recipe: datasets for loading and tokenising, length-grouped batches with
dynamic padding, class-weighted losses, per-epoch dev metrics (the best epoch
is kept), then a temperature and topic thresholds fitted on dev. Nothing from
the test split is used for any choice; it is scored once at the end for the
model card.
"""

from __future__ import annotations

import json
import math
import random
import shlex
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from torch.nn import functional
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from lichang.config import LichangConfig
from lichang.data import load_records, primary_id
from lichang.eval.metrics import stance_metrics, topic_matrix, topic_metrics
from lichang.models.classifier import Calibration, StanceTopicModel, paragraph_segment
from lichang.models.scorer import ParagraphInput, Scorer, pick_device, softmax
from lichang.schema import STANCE_INDEX, STANCES, TOPICS
from lichang.training.augment import augment_epoch, replacement_pool
from lichang.training.auxiliary import AUX_MAX_TOKENS, INEWS_CLASSES, load_inews
from lichang.training.calibration import choose_thresholds, fit_temperature
from lichang.training.model_card import repository_commit


@dataclass
class TrainResult:
    model_dir: Path
    history: list[dict] = field(default_factory=list)
    dev: dict = field(default_factory=dict)
    test: dict | None = None
    seconds: float = 0.0
    chosen: str = ""  # the weights kept: "epoch N" (best on dev) or "mean of epochs A-B"


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def tokenised_dataset(model: StanceTopicModel, records: list[dict]) -> Dataset:
    """Records → a `datasets.Dataset` of input ids, attention masks and both label kinds."""
    dataset = Dataset.from_list([
        {"text": r["text"], "brand": r["brand"], "aliases": list(r.get("aliases", [])),
         "paragraph": primary_id(r["id"]) or r["id"],
         "stance_label": STANCE_INDEX[r["stance"]],
         "topic_labels": [float(t in r["topics"]) for t in TOPICS]}
        for r in records
    ])

    def encode(batch: dict) -> dict:
        encoded = model.encode(batch["text"], batch["brand"], batch["aliases"])
        return {"input_ids": encoded["input_ids"], "target_mask": encoded["target_mask"],
                "length": [len(ids) for ids in encoded["input_ids"]]}

    return dataset.map(encode, batched=True, remove_columns=["text", "brand", "aliases"],
                       desc="tokenising", load_from_cache_file=False)


def rows_by_paragraph(paragraphs: list[str]) -> list[list[int]]:
    """Positions of each paragraph's rows (its primary row and any `-t2` row), paragraphs in first-seen order."""
    rows: dict[str, list[int]] = defaultdict(list)
    for position, paragraph in enumerate(paragraphs):
        rows[paragraph].append(position)
    return list(rows.values())


def length_grouped_batches(paragraphs: list[str], lengths: list[int], batch_size: int,
                           rng: random.Random) -> list[list[int]]:
    """Shuffle, sort by length inside chunks of 50 batches' worth of paragraphs, cut into batches, shuffle them.

    The rows of one paragraph (its primary row and its `-t2` row) always land in the same batch, so the
    two-target loss can compare them; a batch may hold one row more than `batch_size` for that. Rows left
    over at the end of a chunk open the next chunk's first batch, so only the epoch's last batch is short.
    """
    order = rows_by_paragraph(paragraphs)
    rng.shuffle(order)
    chunk = batch_size * 50
    batches: list[list[int]] = []
    batch: list[int] = []
    for start in range(0, len(order), chunk):
        for unit in sorted(order[start : start + chunk], key=lambda rows: max(lengths[i] for i in rows)):
            batch += unit
            if len(batch) >= batch_size:
                batches.append(batch)
                batch = []
    if batch:
        batches.append(batch)
    rng.shuffle(batches)
    return batches


def target_contrast_terms(paragraphs: list[str], stance_labels: list[int]) -> list[tuple[int, int, int]]:
    """(row, other row, stance) for each two targets of one paragraph whose stances differ.

    For each stance that only one of the two has, that target's logit for it must beat the other's. The
    paragraph's overall tone is the same for both rows, so this loss can only be lowered by reading what
    the text says about each target: the shortcut that gave one paragraph the same stance for two brands.
    """
    terms = []
    for rows in rows_by_paragraph(paragraphs):
        for i, a in enumerate(rows):
            for b in rows[i + 1 :]:
                if stance_labels[a] != stance_labels[b]:
                    terms += [(a, b, stance_labels[a]), (b, a, stance_labels[b])]
    return terms


def target_contrast_loss(stance_logits: torch.Tensor, terms: list[tuple[int, int, int]]) -> torch.Tensor:
    """Two-way cross-entropy between the targets of each term, summed (the caller divides by the batch)."""
    if not terms:
        return stance_logits.new_zeros(())
    holder, other, stance = (torch.tensor(column, device=stance_logits.device) for column in zip(*terms, strict=True))
    return functional.softplus(stance_logits[other, stance] - stance_logits[holder, stance]).sum()


def brand_aliases(records: list[dict]) -> dict[str, list[str]]:
    """Each training brand's most frequent alias list, so callers who give only a brand name still get them."""
    lists: dict[str, Counter] = {}
    for record in records:
        if record.get("aliases"):
            lists.setdefault(record["brand"], Counter())[tuple(record["aliases"])] += 1
    return {brand: list(counter.most_common(1)[0][0]) for brand, counter in sorted(lists.items())}


def class_weights(records: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse-frequency stance weights (mean 1) and topic positive weights (neg/pos, at most 4)."""
    counts = np.array([sum(r["stance"] == s for r in records) for s in STANCES], dtype=float)
    stance = counts.sum() / (len(STANCES) * np.maximum(counts, 1))
    positives = np.array([sum(t in r["topics"] for r in records) for t in TOPICS], dtype=float)
    topic = np.clip((len(records) - positives) / np.maximum(positives, 1), 1.0, 4.0)
    return torch.tensor(stance, dtype=torch.float32), torch.tensor(topic, dtype=torch.float32)


def predict_records(scorer: Scorer, records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Raw stance logits and topic probabilities for labeled records."""
    inputs = [ParagraphInput(r["text"], r["brand"], tuple(r.get("aliases", []))) for r in records]
    stance_logits, topic_logits, _ = scorer.logits(inputs)
    return stance_logits, 1.0 / (1.0 + np.exp(-topic_logits))


def score_split(records: list[dict], stance_logits: np.ndarray, topic_probs: np.ndarray,
                calibration: Calibration) -> dict:
    predicted = [STANCES[i] for i in stance_logits.argmax(axis=1)]
    thresholds = np.array([calibration.topic_thresholds[t] for t in TOPICS])
    return {
        "n_paragraphs": len(records),
        "stance": stance_metrics([r["stance"] for r in records], predicted),
        "topics": topic_metrics(topic_matrix([r["topics"] for r in records]),
                                (topic_probs >= thresholds).astype(int)),
    }


def dev_scores(scorer: Scorer, dev_records: list[dict]) -> dict[str, float]:
    """Uncalibrated dev scores of the model's current weights (a history record's dev fields)."""
    scores = score_split(dev_records, *predict_records(scorer, dev_records), Calibration())
    return {"dev_stance_macro_f1": scores["stance"]["macro_f1"], "dev_stance_accuracy": scores["stance"]["accuracy"],
            "dev_topic_micro_f1": scores["topics"]["micro_f1"]}


def _selection(record: dict) -> float:
    """The number that chooses between candidate weights: dev stance macro-F1 + topic micro-F1."""
    return record["dev_stance_macro_f1"] + record["dev_topic_micro_f1"]


def _snapshot(model: StanceTopicModel) -> dict[str, torch.Tensor]:
    """A copy of the trained weights, safe from later optimizer steps."""
    return {name: value.detach().clone() for name, value in model.trained_state().items()}


class WeightAverage:
    """The running mean of the trained weights over the last `count` epochs (off when count < 2).

    Late epochs of a decaying learning rate sit near one another; their mean is often a flatter point
    that generalises a little better than any one of them. Dev decides whether it is used.
    """

    def __init__(self, count: int, epochs: int) -> None:
        self.count = min(count, epochs) if count > 1 else 0
        self.first = epochs - self.count + 1
        self.sums: dict[str, torch.Tensor] = {}
        self.added = 0

    def add(self, epoch: int, state: dict[str, torch.Tensor]) -> None:
        if not self.count or epoch < self.first:
            return
        for name, value in state.items():
            value = value.detach().double()
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
        self.added += 1

    @property
    def ready(self) -> bool:
        return self.count > 0 and self.added == self.count

    def state(self) -> dict[str, torch.Tensor]:
        return {name: (total / self.added).float() for name, total in self.sums.items()}


class Trainer:
    def __init__(self, config: LichangConfig, test_files: list[str] | None = None,
                 show_progress: bool = True) -> None:
        self.config = config
        self.test_files = test_files or []
        self.show_progress = show_progress

    def _auxiliary_batches(self, model: StanceTopicModel, steps: int,
                           rng: random.Random) -> dict[int, list[tuple[dict, torch.Tensor]]]:
        """This epoch's iNews batches, spread evenly over the main steps (step → the batches taken there)."""
        rows = load_inews(self.config.aux_inews, rng)
        size = self.config.batch_size
        chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
        spread: dict[int, list[tuple[dict, torch.Tensor]]] = {}
        for j, chunk in enumerate(chunks):
            encoded = model.tokenizer([paragraph_segment(text) for text, _ in chunk], truncation=True,
                                      max_length=AUX_MAX_TOKENS)
            batch = model.pad_batch(encoded["input_ids"], encoded["attention_mask"])
            spread.setdefault(j * steps // len(chunks), []).append((batch, torch.tensor([y for _, y in chunk])))
        return spread

    def run(self, out_dir: str | Path) -> TrainResult:
        started = time.time()
        commit = repository_commit()  # before training: the data may be edited while it runs
        config = self.config
        set_seed(config.seed)
        if config.threads:
            torch.set_num_threads(config.threads)
        device = pick_device(config.device)
        train_records = load_records(config.train_files)
        dev_records = load_records(config.dev_files)
        if not train_records or not dev_records:
            raise ValueError("training needs non-empty train and dev files")

        model = StanceTopicModel.from_base(config).to(device)
        model.known_aliases = brand_aliases(train_records)
        stance_weight, topic_weight = class_weights(train_records) if config.class_weighting else (None, None)
        stance_loss = nn.CrossEntropyLoss(weight=None if stance_weight is None else stance_weight.to(device))
        topic_loss = nn.BCEWithLogitsLoss(pos_weight=None if topic_weight is None else topic_weight.to(device))

        aux_head = nn.Linear(model.stance_head.in_features, INEWS_CLASSES).to(device) if config.aux_inews else None
        aux_loss = nn.CrossEntropyLoss()
        heads = [p for n, p in model.named_parameters() if n.startswith(("stance_head", "topic_head"))]
        heads += list(aux_head.parameters()) if aux_head else []
        encoder = [p for n, p in model.named_parameters() if n.startswith("encoder.") and p.requires_grad]
        optimizer = torch.optim.AdamW([
            {"params": encoder, "lr": config.learning_rate},
            {"params": heads, "lr": config.head_learning_rate},
        ], weight_decay=config.weight_decay)
        steps_per_epoch = math.ceil(len(train_records) / config.batch_size)
        total_steps = steps_per_epoch * config.epochs
        scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)

        rng = random.Random(config.seed)
        pool = replacement_pool(train_records)
        scorer = Scorer(model)
        result = TrainResult(model_dir=Path(out_dir))
        best_score, best_state, chosen = -1.0, None, ""
        averaged = WeightAverage(config.average_last_epochs, config.epochs)
        for epoch in range(1, config.epochs + 1):
            model.train()
            running, seen = 0.0, 0
            aux_running: list[float] = []
            train_data = tokenised_dataset(model, augment_epoch(train_records, config.brand_swap, pool, rng))
            batches = length_grouped_batches(train_data["paragraph"], train_data["length"], config.batch_size, rng)
            aux_at = self._auxiliary_batches(model, len(batches), rng) if aux_head else {}
            bar = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", disable=not self.show_progress)
            for step, indices in enumerate(bar):
                rows = train_data.select(indices)
                batch = model.pad_batch(rows["input_ids"], rows["target_mask"])
                stance_logits, topic_logits = model(**{k: v.to(device) for k, v in batch.items()})
                loss = stance_loss(stance_logits, torch.tensor(rows["stance_label"], device=device))
                if config.pair_loss_weight:
                    terms = target_contrast_terms(rows["paragraph"], rows["stance_label"])
                    loss = loss + config.pair_loss_weight * target_contrast_loss(stance_logits, terms) / len(indices)
                loss = loss + config.topic_loss_weight * topic_loss(
                    topic_logits, torch.tensor(rows["topic_labels"], device=device))
                for aux_batch, aux_labels in aux_at.get(step, []):
                    aux_logits = aux_head(model.pool(**{k: v.to(device) for k, v in aux_batch.items()}))
                    aux_step_loss = aux_loss(aux_logits, aux_labels.to(device))
                    loss = loss + config.aux_weight * aux_step_loss
                    aux_running.append(aux_step_loss.item())
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(encoder + heads, 1.0)
                optimizer.step()
                scheduler.step()
                running += loss.item() * len(indices)
                seen += len(indices)
                bar.set_postfix(loss=f"{running / seen:.3f}")
            model.eval()
            record = {"epoch": epoch, "train_loss": running / max(seen, 1), **dev_scores(scorer, dev_records),
                      "seconds": round(time.time() - started, 1)}
            if aux_head:
                record |= {"aux_batches": len(aux_running), "aux_train_loss": float(np.mean(aux_running))}
            result.history.append(record)
            print(json.dumps(record), file=sys.stderr, flush=True)
            if _selection(record) > best_score:
                best_score, best_state, chosen = _selection(record), _snapshot(model), f"epoch {epoch}"
            averaged.add(epoch, model.trained_state())

        if averaged.ready:
            # best_state is loaded below whatever wins, so the last epoch's weights need no restoring
            mean_state = averaged.state()
            model.load_state_dict(mean_state, strict=False)
            record = {"epoch": f"mean of epochs {averaged.first}-{config.epochs}",
                      **dev_scores(scorer, dev_records), "seconds": round(time.time() - started, 1)}
            result.history.append(record)
            print(json.dumps(record), file=sys.stderr, flush=True)
            if _selection(record) > best_score:
                best_score, best_state, chosen = _selection(record), mean_state, record["epoch"]

        model.load_state_dict(best_state, strict=False)
        result.chosen = chosen
        model.round_to_storage_precision()
        model.eval()
        dev_logits, dev_topics = predict_records(scorer, dev_records)
        dev_labels = np.array([STANCE_INDEX[r["stance"]] for r in dev_records])
        model.calibration = Calibration(
            temperature=fit_temperature(dev_logits, dev_labels),
            topic_thresholds=choose_thresholds(dev_topics, topic_matrix([r["topics"] for r in dev_records])),
        )
        result.dev = score_split(dev_records, dev_logits, dev_topics, model.calibration)
        if self.test_files:
            test_records = load_records(self.test_files)
            test_logits, test_topics = predict_records(scorer, test_records)
            result.test = score_split(test_records, test_logits, test_topics, model.calibration)
            result.test["stance"]["nll"] = float(_nll(test_logits / model.calibration.temperature, test_records))
        model.save_pretrained(out_dir)
        result.seconds = time.time() - started
        metrics = {"history": result.history, "dev": result.dev, "test": result.test,
                   "train_seconds": round(result.seconds, 1), "device": str(device),
                   "repository_commit": commit, "temperature": model.calibration.temperature,
                   "topic_thresholds": model.calibration.topic_thresholds, "chosen_weights": chosen,
                   "command": "lichang " + " ".join(shlex.quote(a) for a in sys.argv[1:])}
        (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=2), encoding="utf-8")
        return result


def _nll(logits: np.ndarray, records: list[dict]) -> float:
    probabilities = softmax(logits)
    labels = [STANCE_INDEX[r["stance"]] for r in records]
    return float(-np.mean(np.log(probabilities[np.arange(len(labels)), labels] + 1e-12)))
