"""The one configuration object of a model: its architecture and the recipe that trained it.

It is saved inside every model folder (`lichang.json`), so a model always
carries the settings it was built with; `lichang train` reads overrides from a
JSON file or the command line into the same object.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import lichang.models
from lichang.models.base_encoder import DEFAULT_ENCODER

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
SPLITS_DIR = DATA_DIR / "splits"
# the shipped model lives beside the model code, in the repository and when installed
DEFAULT_MODEL_DIR = Path(lichang.models.__file__).resolve().parent / "default"


@dataclass
class LichangConfig:
    # --- model ---
    name: str = "lichang-zh-small"
    version: str = "0.1.0"
    base_encoder: str = DEFAULT_ENCODER  # or any Hugging Face encoder path / id
    max_length: int = 192  # tokens per window (target segment + paragraph)
    window_stride: int = 48  # overlap between windows of a long paragraph
    trainable_layers: int = 6  # top encoder layers fine-tuned (embeddings always stay frozen)
    dropout: float = 0.1
    attention_dropout: float | None = 0.0  # None keeps the base encoder's own (0.1); 0 trains ~30% faster on CPU
    max_aliases: int = 6  # aliases of the target written into the input
    mark_target: bool = True  # wrap the target's mentions in the paragraph in «»
    target_pooling: bool = True  # heads also read the mean of the target's tokens (see classifier.forward)
    # --- training recipe ---
    train_files: list[str] = field(default_factory=lambda: [str(SPLITS_DIR / "train.jsonl")])
    dev_files: list[str] = field(default_factory=lambda: [str(SPLITS_DIR / "dev.jsonl")])
    epochs: int = 2  # default recipe: 827 s on a 2-core EPYC, 9,487 rows (README); training/recipes/full.json is longer
    batch_size: int = 16
    learning_rate: float = 1e-4
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    topic_loss_weight: float = 1.0
    class_weighting: bool = True
    pair_loss_weight: float = 2.0  # two-target loss on a paragraph and its -t2 row (training/trainer.py); 0: off
    aux_inews: int = 0  # iNews texts per epoch as an auxiliary sentiment task (0: off; training/auxiliary.py)
    aux_weight: float = 0.3  # weight of that task's loss
    brand_swap: float = 0.5  # share of training rows per epoch whose target is renamed (see training/augment.py)
    average_last_epochs: int = 0  # >1: also try the mean of the last N epochs' weights; dev picks it or the best epoch
    seed: int = 13
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads; 0 = torch's default

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LichangConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown configuration keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> LichangConfig:
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_dict(values)
