"""Runtime settings of the REST service, read from LICHANG_* environment variables or `lichang serve` options."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, Field

from lichang.config import DEFAULT_MODEL_DIR


class ServiceSettings(BaseModel):
    model_dir: str = str(DEFAULT_MODEL_DIR)
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    device: str = "auto"
    api_key: str | None = None  # when set, every /v1 call needs header X-API-Key
    default_brand: str | None = None
    # input limits (each breach is answered with the limit's name and value)
    max_body_bytes: int = Field(2_000_000, gt=0)
    max_paragraphs: int = Field(500, gt=0)  # per article
    max_paragraph_chars: int = Field(5_000, gt=0)
    max_batch_articles: int = Field(32, gt=0)
    # micro-batching of paragraphs across concurrent requests
    max_batch_tokens: int = Field(8192, gt=0)
    batch_wait_ms: float = Field(5.0, ge=0)
    max_queue_paragraphs: int = Field(4000, gt=0)  # beyond this, 503 + Retry-After
    retry_after_seconds: int = 2

    @classmethod
    def from_env(cls, **overrides: Any) -> ServiceSettings:
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = os.environ.get(f"LICHANG_{name.upper()}")
            if raw is not None and raw != "":
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
