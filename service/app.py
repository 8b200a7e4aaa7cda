"""The REST service: POST an article, get each paragraph's stance and topics and the article's breakdown."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lichang.analysis import summarise, to_results
from lichang.models.classifier import StanceTopicModel
from lichang.models.scorer import ParagraphInput, Scorer, pick_device
from lichang.paragraphs import split_paragraphs
from lichang.service.batcher import MicroBatcher, QueueFull
from lichang.service.schemas import (
    AnalyzeRequest,
    AnalyzeResponse,
    BatchItem,
    BatchResponse,
    ErrorBody,
    ModelInfo,
)
from lichang.service.settings import ServiceSettings

log = logging.getLogger("lichang.service")


class APIError(Exception):
    """An error answered as JSON: which problem, a message a user can act on, and the limit when one was hit."""

    def __init__(self, status: int, error: str, message: str, limit: str | None = None,
                 value: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers
        self.body = ErrorBody(error=error, message=message, limit=limit, value=value)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("lichang_requests_total", "HTTP requests", ["path", "status"],
                                registry=self.registry)
        self.latency = Histogram("lichang_request_seconds", "request latency", ["path"], registry=self.registry,
                                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.batch_size = Histogram("lichang_batch_paragraphs", "paragraphs per model call",
                                    registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.paragraphs = Counter("lichang_paragraphs_scored_total", "paragraphs scored", registry=self.registry)
        self.queue_depth = Gauge("lichang_queue_paragraphs", "paragraphs waiting to be scored",
                                 registry=self.registry)


class ServiceState:
    """What the endpoints share: settings, the loaded model, the batcher and the metrics."""

    def __init__(self, settings: ServiceSettings, model: StanceTopicModel | None = None) -> None:
        self.settings = settings
        self.model = model
        self.batcher: MicroBatcher | None = None
        self.metrics = Metrics()

    @property
    def ready(self) -> bool:
        return self.batcher is not None

    @property
    def model_info(self) -> ModelInfo:
        assert self.model is not None
        return ModelInfo(name=self.model.config.name, version=self.model.config.version)


def get_state(request: Request) -> ServiceState:
    return request.app.state.lichang


State = Annotated[ServiceState, Depends(get_state)]


def require_api_key(request: Request, state: State) -> None:
    expected = state.settings.api_key
    if not expected:
        return
    given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
    if not given or not secrets.compare_digest(given.encode(), expected.encode()):
        raise APIError(401, "unauthorized", "this service needs an API key: send it in the X-API-Key header")


def require_ready(state: State) -> MicroBatcher:
    if state.batcher is None:
        raise APIError(503, "not_ready", "the model is still loading; retry shortly", headers={"Retry-After": "5"})
    return state.batcher


Ready = Annotated[MicroBatcher, Depends(require_ready)]


def article_paragraphs(article: AnalyzeRequest, settings: ServiceSettings) -> tuple[str, list[str]]:
    """Validate one article against the limits; return its brand and paragraphs."""
    brand = (article.brand or settings.default_brand or "").strip()
    if not brand:
        raise APIError(422, "brand_required", "give the target brand in 'brand' (no default brand is configured)")
    if (article.text is None) == (article.paragraphs is None):
        raise APIError(422, "text_or_paragraphs", "give exactly one of 'text' (the whole article) or 'paragraphs'")
    if article.text is not None:
        if len(article.text) > settings.max_paragraphs * settings.max_paragraph_chars:
            raise APIError(413, "limit_exceeded", "the article text is too long",
                           limit="max_paragraphs*max_paragraph_chars",
                           value=settings.max_paragraphs * settings.max_paragraph_chars)
        paragraphs = split_paragraphs(article.text)
        if not paragraphs:
            raise APIError(422, "no_paragraphs", "'text' is empty or only whitespace: there is nothing to score")
    else:
        paragraphs = [p.strip() for p in article.paragraphs or []]
        if not paragraphs:
            raise APIError(422, "no_paragraphs", "'paragraphs' is an empty list: there is nothing to score")
        empty = [i for i, p in enumerate(paragraphs) if not p]
        if empty:
            raise APIError(422, "empty_paragraph", f"paragraphs at index {empty[:10]} are empty or whitespace")
    if len(paragraphs) > settings.max_paragraphs:
        raise APIError(413, "limit_exceeded", f"the article has {len(paragraphs)} paragraphs",
                       limit="max_paragraphs", value=settings.max_paragraphs)
    too_long = [i for i, p in enumerate(paragraphs) if len(p) > settings.max_paragraph_chars]
    if too_long:
        raise APIError(413, "limit_exceeded", f"paragraph {too_long[0]} has {len(paragraphs[too_long[0]])} characters",
                       limit="max_paragraph_chars", value=settings.max_paragraph_chars)
    return brand, paragraphs


async def analyse(state: ServiceState, batcher: MicroBatcher,
                  articles: list[tuple[AnalyzeRequest, str, list[str]]]) -> list[AnalyzeResponse]:
    """Score several validated articles with one submission to the batcher."""
    inputs = [ParagraphInput(p, brand, tuple(a.aliases)) for a, brand, paragraphs in articles for p in paragraphs]
    try:
        scores = await batcher.score(inputs)
    except QueueFull as exc:
        raise APIError(503, "overloaded", str(exc), limit="max_queue_paragraphs", value=exc.limit,
                       headers={"Retry-After": str(state.settings.retry_after_seconds)}) from exc
    state.metrics.paragraphs.inc(len(inputs))
    responses, start = [], 0
    for article, brand, paragraphs in articles:
        results = to_results(paragraphs, scores[start : start + len(paragraphs)])
        start += len(paragraphs)
        responses.append(AnalyzeResponse(
            model=state.model_info, brand=brand, article_id=article.article_id, title=article.title,
            paragraphs=[r.to_api() for r in results], summary=summarise(results).to_api(),
        ))
    return responses


v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["analysis"])


@v1.post("/analyze", response_model=AnalyzeResponse,
         responses={413: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}})
async def analyze(article: AnalyzeRequest, state: State, batcher: Ready) -> AnalyzeResponse:
    """Score every paragraph of one article for its stance toward the brand and its topics."""
    brand, paragraphs = article_paragraphs(article, state.settings)
    return (await analyse(state, batcher, [(article, brand, paragraphs)]))[0]


@v1.post("/analyze/batch", response_model=BatchResponse,
         responses={413: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}})
async def analyze_batch(body: dict[str, Any], state: State,
                        batcher: Ready) -> BatchResponse:
    """Score many articles in one call: `{"articles": [<analyze body>, …]}`.

    A bad article yields an error entry at its index; the others are still scored.
    """
    unknown = sorted(set(body) - {"articles"})
    if unknown:
        raise APIError(422, "unknown_fields", f"unknown field(s) {unknown}; the body is {{'articles': [...]}}")
    articles = body.get("articles")
    if not isinstance(articles, list) or not articles:
        raise APIError(422, "no_articles", "'articles' must be a non-empty list of articles")
    if len(articles) > state.settings.max_batch_articles:
        raise APIError(413, "limit_exceeded", f"the batch has {len(articles)} articles",
                       limit="max_batch_articles", value=state.settings.max_batch_articles)
    items: list[BatchItem | None] = [None] * len(articles)
    valid: list[tuple[int, AnalyzeRequest, str, list[str]]] = []
    for index, raw in enumerate(articles):
        article_id = raw.get("article_id") if isinstance(raw, dict) else None
        try:
            article = AnalyzeRequest.model_validate(raw)
            brand, paragraphs = article_paragraphs(article, state.settings)
            valid.append((index, article, brand, paragraphs))
        except ValidationError as exc:
            problem = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'article'}: {e['msg']}" for e in exc.errors())
            items[index] = BatchItem(index=index, article_id=str(article_id) if article_id else None, ok=False,
                                     error=ErrorBody(error="invalid_article", message=problem))
        except APIError as exc:
            items[index] = BatchItem(index=index, article_id=str(article_id) if article_id else None, ok=False,
                                     error=exc.body)
    if valid:
        results = await analyse(state, batcher, [(a, b, p) for _, a, b, p in valid])
        for (index, article, _, _), result in zip(valid, results, strict=True):
            items[index] = BatchItem(index=index, article_id=article.article_id, ok=True, result=result)
    return BatchResponse(model=state.model_info, results=[item for item in items if item is not None])


ops = APIRouter(tags=["operations"])


@ops.get("/healthz")
async def healthz() -> dict:
    """The process is alive."""
    return {"status": "ok"}


@ops.get("/readyz")
async def readyz(state: State) -> JSONResponse:
    """The model is loaded and requests can be scored."""
    if not state.ready:
        return JSONResponse({"status": "loading"}, status_code=503)
    return JSONResponse({"status": "ready", "model": state.model_info.model_dump()})


@ops.get("/metrics", response_class=PlainTextResponse)
async def metrics(state: State) -> PlainTextResponse:
    """Prometheus metrics: requests, latencies, batch sizes, paragraphs scored, queue depth."""
    if state.batcher is not None:
        state.metrics.queue_depth.set(state.batcher.depth)
    return PlainTextResponse(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


class BodyLimitMiddleware:
    """Refuse bodies over max_body_bytes (by Content-Length, or while streaming) with a 413 JSON error."""

    def __init__(self, app, max_body_bytes: int) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        error = APIError(413, "limit_exceeded", "the request body is too large",
                         limit="max_body_bytes", value=self.max_body_bytes)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return await _error_response(error)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await _error_response(error)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def _error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body.model_dump(exclude_none=True), status_code=error.status, headers=error.headers)


def create_app(settings: ServiceSettings | None = None, model: StanceTopicModel | None = None) -> FastAPI:
    """The ASGI app. A preloaded `model` (tests, benchmarks) skips loading from settings.model_dir."""
    settings = settings or ServiceSettings.from_env()
    state = ServiceState(settings, model)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if state.model is None:
            state.model = await asyncio.to_thread(
                StanceTopicModel.from_pretrained, settings.model_dir, pick_device(settings.device))
        scorer = Scorer(state.model, max_batch_tokens=settings.max_batch_tokens)
        batcher = MicroBatcher(scorer, settings.max_batch_tokens, settings.batch_wait_ms,
                               settings.max_queue_paragraphs, on_batch=state.metrics.batch_size.observe)
        batcher.start()
        state.batcher = batcher
        log.info(json.dumps({"event": "ready", "model": state.model_info.model_dump(),
                             "device": str(scorer.device)}))
        yield
        state.batcher = None
        await batcher.stop()

    app = FastAPI(title="lichang", version="0.1.0", lifespan=lifespan,
                  description="Paragraph-level stance (praise / critique / neutral) and topics of Chinese "
                              "articles toward a target brand.")
    app.state.lichang = state
    app.include_router(v1)
    app.include_router(ops)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers an undecodable body (e.g. GBK bytes) with a bare 400; say what to fix instead.
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):
            return JSONResponse({"error": "invalid_body", "message": "the body could not be read: send JSON "
                                 "encoded as UTF-8 with content-type application/json"}, status_code=400)
        return JSONResponse({"error": f"http_{exc.status_code}", "message": str(exc.detail)},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"where": ".".join(map(str, e["loc"])), "problem": e["msg"]} for e in exc.errors()]
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            message = "the body is not valid JSON (or not UTF-8): " + "; ".join(d["problem"] for d in details)
            return JSONResponse({"error": "invalid_json", "message": message}, status_code=400)
        message = "; ".join(f"{d['where']}: {d['problem']}" for d in details)
        return JSONResponse({"error": "invalid_request", "message": message, "details": details}, status_code=422)

    @app.middleware("http")
    async def request_log(request: Request, call_next):
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:
            log.exception(json.dumps({"event": "error", "request_id": request_id, "path": request.url.path}))
            response = JSONResponse({"error": "internal", "message": "internal error; see the service log",
                                     "request_id": request_id}, status_code=500)
        elapsed = time.perf_counter() - started
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        state.metrics.requests.labels(path, str(response.status_code)).inc()
        state.metrics.latency.labels(path).observe(elapsed)
        response.headers["X-Request-ID"] = request_id
        log.info(json.dumps({"event": "request", "request_id": request_id, "method": request.method,
                             "path": request.url.path, "status": response.status_code,
                             "ms": round(elapsed * 1000, 1)}))
        return response

    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    return app
