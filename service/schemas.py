"""Request and response bodies of the REST API (pydantic; unknown fields are rejected)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AnalyzeRequest(Strict):
    text: str | None = Field(None, description="the whole article; paragraphs are its non-empty lines")
    paragraphs: list[str] | None = Field(None, description="the article already split into paragraphs")
    brand: str | None = Field(None, description="target brand; required unless the service has a default brand")
    aliases: list[str] = Field(default_factory=list, description="other names of the brand (products, founder …)")
    article_id: str | None = None
    title: str | None = None


class BatchRequest(Strict):
    articles: list[AnalyzeRequest]


class StanceOut(BaseModel):
    label: str
    scores: dict[str, float]


class TopicsOut(BaseModel):
    labels: list[str]
    scores: dict[str, float]


class ParagraphOut(BaseModel):
    index: int
    text: str
    boilerplate: bool
    stance: StanceOut
    topics: TopicsOut
    windows: int = Field(1, description="model windows the paragraph needed (>1: long paragraph, nothing cut)")


class ModelInfo(BaseModel):
    name: str
    version: str


class SummaryOut(BaseModel):
    paragraphs: int
    scored_paragraphs: int
    counts: dict[str, int]
    shares: dict[str, float]
    net_stance: float
    by_topic: dict[str, dict[str, int]]
    strongest_praise: list[dict]
    strongest_critique: list[dict]


class AnalyzeResponse(BaseModel):
    model: ModelInfo
    brand: str
    article_id: str | None
    title: str | None = None
    paragraphs: list[ParagraphOut]
    summary: SummaryOut


class ErrorBody(BaseModel):
    error: str
    message: str
    limit: str | None = None
    value: int | None = None


class BatchItem(BaseModel):
    index: int
    article_id: str | None
    ok: bool
    result: AnalyzeResponse | None = None
    error: ErrorBody | None = None


class BatchResponse(BaseModel):
    model: ModelInfo
    results: list[BatchItem]
