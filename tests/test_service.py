"""The REST service, through real HTTP, with the shipped default model."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import uvicorn

from lichang.config import DEFAULT_MODEL_DIR
from lichang.models.classifier import StanceTopicModel
from lichang.service.app import create_app
from lichang.service.settings import ServiceSettings

SEED = Path(__file__).resolve().parents[1] / "seeds"


@pytest.fixture(scope="module")
def default_model():
    return StanceTopicModel.from_pretrained(DEFAULT_MODEL_DIR)


class RunningServer:
    def __init__(self, settings: ServiceSettings, model) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(create_app(settings, model), host="127.0.0.1", port=self.port, log_level="error")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> httpx.Client:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120)
        return self.client

    def __exit__(self, *exc) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def client(default_model):
    settings = ServiceSettings(max_paragraphs=200, max_paragraph_chars=2000, max_batch_articles=4,
                               max_body_bytes=200_000)
    with RunningServer(settings, default_model) as http:
        yield http


def seed_text(prefix: str) -> str:
    return next(SEED.glob(f"{prefix}_*.txt")).read_text(encoding="utf-8")


def test_seed_article_breakdown_has_the_documented_shape(client):
    text = seed_text("000")
    response = client.post("/v1/analyze", json={"text": text, "brand": "小米", "aliases": ["小米汽车", "雷军"],
                                                 "article_id": "seed000"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["name"] and body["model"]["version"]
    assert body["brand"] == "小米" and body["article_id"] == "seed000"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    assert [p["text"] for p in body["paragraphs"]] == lines
    for index, paragraph in enumerate(body["paragraphs"]):
        assert paragraph["index"] == index
        scores = paragraph["stance"]["scores"]
        assert set(scores) == {"praise", "critique", "neutral"}
        assert abs(sum(scores.values()) - 1) < 1e-6
        assert paragraph["stance"]["label"] == max(scores, key=scores.get)
        assert set(paragraph["topics"]["scores"]) == {"marketing", "quality", "legal", "user_community"}
        assert set(paragraph["topics"]["labels"]) <= set(paragraph["topics"]["scores"])
    summary = body["summary"]
    assert -1 <= summary["net_stance"] <= 1
    assert abs(sum(summary["shares"].values()) - 1) < 1e-3
    # seed000 is a laudatory piece about Xiaomi's owners: praise must dominate
    assert summary["shares"]["praise"] > summary["shares"]["critique"]
    assert summary["net_stance"] > 0.3
    assert summary["strongest_praise"] and summary["strongest_praise"][0]["score"] >= 0.5
    boiler = [p for p in body["paragraphs"] if p["boilerplate"]]
    assert summary["scored_paragraphs"] == len(lines) - len(boiler)
    assert response.headers["x-request-id"]


def _stance(client, text: str, brand: str) -> dict:
    return client.post("/v1/analyze", json={"paragraphs": [text], "brand": brand}).json()["paragraphs"][0]["stance"]


def test_same_paragraph_scores_differently_for_two_brands(client):
    text = "华为这一季的新机卖得火爆,反观苹果,销量一路下滑,渠道商怨声载道。"
    assert _stance(client, text, "华为")["label"] == "praise"
    assert _stance(client, text, "苹果")["label"] == "critique"
    # A harder order: the loser named first, in a clause the winner's good news follows.
    text = "当蔚来还在为召回和亏损焦头烂额时,比亚迪的月销量又翻了一番,海外订单排到了明年。"
    byd, nio = _stance(client, text, "比亚迪"), _stance(client, text, "蔚来")
    assert byd["label"] == "praise"
    assert nio["label"] == "critique"
    assert byd["scores"]["praise"] > nio["scores"]["praise"] + 0.1
    assert nio["scores"]["critique"] > byd["scores"]["critique"] + 0.1


def test_concurrent_requests_match_single_requests(client):
    articles = [
        {"paragraphs": ["海底捞的服务一如既往地贴心,排队时还有免费的小吃。", "但这次的菜品分量明显变少了。"],
         "brand": "海底捞"},
        {"paragraphs": ["法院一审判决携程败诉,需退还消费者差价并赔偿三倍。"], "brand": "携程"},
        {"paragraphs": ["招商银行App上线了新的理财频道。", "不少用户反映转账时频繁闪退。", "客服至今没有回应。"],
         "brand": "招商银行"},
    ] * 4
    singles = [client.post("/v1/analyze", json=a).json() for a in articles[:3]]
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda a: client.post("/v1/analyze", json=a), articles))
    assert all(r.status_code == 200 for r in answers)
    for i, response in enumerate(answers):
        expected = singles[i % 3]["paragraphs"]
        got = response.json()["paragraphs"]
        assert [p["stance"]["label"] for p in got] == [p["stance"]["label"] for p in expected]
        for p, q in zip(got, expected, strict=True):
            for label, value in p["stance"]["scores"].items():
                assert abs(value - q["stance"]["scores"][label]) < 1e-4


def test_batch_scores_good_articles_and_reports_bad_ones(client):
    body = {"articles": [
        {"text": "比亚迪发布了新一代刀片电池。\n\n续航大幅提升。", "brand": "比亚迪", "article_id": "a"},
        {"text": "   \n  ", "brand": "比亚迪", "article_id": "b"},
        {"text": 5, "brand": "比亚迪", "article_id": "c"},
        {"paragraphs": ["瑞幸咖啡新品上市首日卖出百万杯。"], "article_id": "d"},
    ]}
    response = client.post("/v1/analyze/batch", json=body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert [r["ok"] for r in results] == [True, False, False, False]
    assert results[0]["result"]["article_id"] == "a" and len(results[0]["result"]["paragraphs"]) == 2
    assert results[1]["error"]["error"] == "no_paragraphs"
    assert results[2]["error"]["error"] == "invalid_article" and "text" in results[2]["error"]["message"]
    assert results[3]["error"]["error"] == "brand_required"


@pytest.mark.parametrize(
    ("body", "status", "error", "limit"),
    [
        ({"text": "", "brand": "小米"}, 422, "no_paragraphs", None),
        ({"text": "\n \n", "brand": "小米"}, 422, "no_paragraphs", None),
        ({"paragraphs": [], "brand": "小米"}, 422, "no_paragraphs", None),
        ({"paragraphs": ["好", "  "], "brand": "小米"}, 422, "empty_paragraph", None),
        ({"text": "小米"}, 422, "brand_required", None),
        ({"text": "a", "paragraphs": ["a"], "brand": "小米"}, 422, "text_or_paragraphs", None),
        ({"text": "小米", "brand": "小米", "colour": "red"}, 422, "invalid_request", None),
        ({"text": ["not", "a", "string"], "brand": "小米"}, 422, "invalid_request", None),
        ({"paragraphs": ["段落"] * 201, "brand": "小米"}, 413, "limit_exceeded", "max_paragraphs"),
        ({"paragraphs": ["长" * 2001], "brand": "小米"}, 413, "limit_exceeded", "max_paragraph_chars"),
    ],
)
def test_bad_input_gets_a_clear_error(client, body, status, error, limit):
    response = client.post("/v1/analyze", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert response.json()["message"]
    if limit:
        assert response.json()["limit"] == limit and response.json()["value"] > 0


def test_malformed_bodies(client):
    bad_json = client.post("/v1/analyze", content=b'{"text": "x", ', headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error"] == "invalid_json"
    gbk = '{"text": "小米汽车", "brand": "小米"}'.encode("gbk")
    bad_bytes = client.post("/v1/analyze", content=gbk, headers={"content-type": "application/json"})
    assert bad_bytes.status_code in (400, 422) and bad_bytes.json()["message"]
    huge = client.post("/v1/analyze", json={"text": "小" * 150_000, "brand": "小米"})
    assert huge.status_code == 413 and huge.json()["limit"] == "max_body_bytes"
    too_many = client.post("/v1/analyze/batch", json={"articles": [{"text": "a", "brand": "b"}] * 5})
    assert too_many.status_code == 413 and too_many.json()["limit"] == "max_batch_articles"
    # the worker survived all of that
    assert client.post("/v1/analyze", json={"text": "小米汽车销量创新高", "brand": "小米"}).status_code == 200


def test_operations_endpoints(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    client.post("/v1/analyze", json={"text": "小米汽车销量创新高", "brand": "小米"})
    metrics = client.get("/metrics").text
    for name in ("lichang_requests_total", "lichang_request_seconds_bucket", "lichang_batch_paragraphs_bucket",
                 "lichang_paragraphs_scored_total", "lichang_queue_paragraphs"):
        assert name in metrics
    assert client.get("/openapi.json").json()["paths"]["/v1/analyze"]


def test_api_key_and_queue_full(default_model):
    settings = ServiceSettings(api_key="s3cret", max_queue_paragraphs=2, retry_after_seconds=7)
    with RunningServer(settings, default_model) as http:
        denied = http.post("/v1/analyze", json={"text": "小米", "brand": "小米"})
        assert denied.status_code == 401 and denied.json()["error"] == "unauthorized"
        assert http.get("/healthz").status_code == 200  # operations stay open
        headers = {"X-API-Key": "s3cret"}
        ok = http.post("/v1/analyze", json={"paragraphs": ["一", "二"], "brand": "小米"}, headers=headers)
        assert ok.status_code == 200
        full = http.post("/v1/analyze", json={"paragraphs": ["一", "二", "三"], "brand": "小米"}, headers=headers)
        assert full.status_code == 503
        assert full.headers["retry-after"] == "7"
        assert full.json()["limit"] == "max_queue_paragraphs"


def test_default_brand_is_used_when_configured(default_model):
    with RunningServer(ServiceSettings(default_brand="小米"), default_model) as http:
        response = http.post("/v1/analyze", json={"text": "小米汽车交付突破50万台。"})
        assert response.status_code == 200 and response.json()["brand"] == "小米"
