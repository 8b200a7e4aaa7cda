"""`lichang eval`: each figure of the report checked on hand-made predictions whose answers are worked out by hand,
then the command end to end on a tiny random model (plumbing only, says nothing about quality)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import write_jsonl

from lichang.cli import main
from lichang.config import REPO_ROOT, LichangConfig
from lichang.eval.bootstrap import article_resamples, bootstrap_intervals
from lichang.eval.evaluate import find_in_repo, resolve_split_files
from lichang.eval.metrics import expected_calibration_error, reliability_bins
from lichang.eval.report import (
    EvalSettings,
    Predictions,
    compute_metrics,
    draw_figures,
    length_bucket,
    render_html,
    render_markdown,
    two_brand_pairs,
)
from lichang.schema import STANCES, TOPICS

THRESHOLDS = {"marketing": 0.5, "quality": 0.5, "legal": 0.3, "user_community": 0.5}
SHORT = "小米汽车本月销量很好。"
LONG = "车主集体投诉小米汽车刹车异响,维权群已有三百人,官方至今没有回应,车主们表示非常失望,并已联系律师准备起诉。"

# id, article, brand, genre, text, true stance, true topics, stance probabilities (praise, critique, neutral),
# topic probabilities (marketing, quality, legal, user_community)
ROWS = [
    ("a1-p0", "a1", "小米", "news", "小米汽车销量创新高!", "praise", ["marketing"],
     [0.8, 0.1, 0.1], [0.9, 0.1, 0.0, 0.1]),
    ("a1-p1", "a1", "小米", "news", "车主投诉刹车有异响。", "critique", ["quality", "user_community"],
     [0.2, 0.6, 0.2], [0.1, 0.8, 0.0, 0.4]),
    ("a1-p2", "a1", "小米", "news", "发布会定于下周举行。", "neutral", [],
     [0.7, 0.1, 0.2], [0.6, 0.0, 0.0, 0.0]),
    ("a2-p0", "a2", "小米", "self_media", "小米交付量全国第一。", "praise", [],
     [0.9, 0.05, 0.05], [0.0, 0.0, 0.0, 0.0]),
    ("a2-p1", "a2", "小米", "self_media", "小米被车主告上法庭。", "critique", ["legal"],
     [0.2, 0.3, 0.5], [0.0, 0.0, 0.4, 0.0]),
    ("a3-p0", "a3", "华为", None, "华为将召开发布会议。", "neutral", ["marketing"],
     [0.2, 0.2, 0.6], [0.3, 0.0, 0.0, 0.0]),
    ("a3-p1", "a3", "华为", None, "华为芯片性能很出色。", "praise", ["quality"],
     [0.03, 0.95, 0.02], [0.0, 0.7, 0.0, 0.0]),
    ("a3-p2", "a3", "华为", None, LONG, "critique", [],
     [0.1, 0.7, 0.2], [0.0, 0.0, 0.0, 0.6]),
]


def hand_records() -> list[dict]:
    records = []
    for rid, article, brand, genre, text, stance, topics, _, _ in ROWS:
        record = {"id": rid, "article_id": article, "brand": brand, "text": text, "stance": stance, "topics": topics}
        if genre:
            record["genre"] = genre
        records.append(record)
    return records


def hand_predictions(uncalibrated: bool = True) -> Predictions:
    stance = np.array([r[7] for r in ROWS])
    # before temperature: fully confident in the same argmax (max probability 1.0, the last bin)
    sharp = np.eye(3)[stance.argmax(axis=1)] if uncalibrated else None
    return Predictions(stance_probs=stance, topic_probs=np.array([r[8] for r in ROWS]),
                       topic_thresholds=THRESHOLDS, stance_probs_uncalibrated=sharp, temperature=1.5)


@pytest.fixture(scope="module")
def hand_metrics() -> dict:
    majority = (["praise"] * len(ROWS), np.zeros((len(ROWS), len(TOPICS)), dtype=int))
    settings = EvalSettings(resamples=200, seed=3, top_errors=2)
    return compute_metrics(hand_records(), hand_predictions(), {"majority": majority}, settings)


def test_hand_made_set_is_as_designed():
    short = [r[4] for r in ROWS[:-1]]
    assert {len(t) for t in short} == {10}, [len(t) for t in short]
    assert len(LONG) > 50
    assert all(abs(sum(r[7]) - 1) < 1e-9 for r in ROWS)


def test_stance_figures(hand_metrics):
    # predicted: praise, critique, praise, praise, neutral, neutral, critique, critique → 5 of 8 right
    stance = hand_metrics["stance"]
    assert hand_metrics["n_paragraphs"] == 8 and hand_metrics["n_articles"] == 3 and hand_metrics["n_brands"] == 2
    assert stance["accuracy"] == pytest.approx(5 / 8)
    # praise: TP 2 of 3 predicted, 3 labeled; critique: 2 of 3, 3; neutral: 1 of 2, 2
    for label, value in (("praise", 2 / 3), ("critique", 2 / 3), ("neutral", 1 / 2)):
        row = stance["per_class"][label]
        assert row["precision"] == pytest.approx(value)
        assert row["recall"] == pytest.approx(value)
        assert row["f1"] == pytest.approx(value)
    assert stance["per_class"]["neutral"]["support"] == 2
    assert stance["macro_f1"] == pytest.approx(11 / 18)
    assert stance["confusion_matrix"]["matrix"] == [[2, 1, 0], [0, 2, 1], [1, 0, 1]]
    assert stance["predicted_counts"] == {"praise": 3, "critique": 3, "neutral": 2}


def test_topic_figures_use_the_model_thresholds(hand_metrics):
    topics = hand_metrics["topics"]
    # legal 0.4 counts because its threshold is 0.3; marketing 0.3 of a3-p0 does not (0.5)
    expected = {"marketing": (0.5, 0.5, 0.5), "quality": (1.0, 1.0, 1.0), "legal": (1.0, 1.0, 1.0),
                "user_community": (0.0, 0.0, 0.0)}
    for topic, (precision, recall, f1) in expected.items():
        row = topics["per_label"][topic]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((precision, recall, f1)), topic
    assert topics["per_label"]["legal"]["threshold"] == 0.3
    assert topics["micro_f1"] == pytest.approx(2 / 3)  # TP 4, FP 2, FN 2
    assert topics["macro_f1"] == pytest.approx(0.625)
    assert topics["per_label"]["quality"]["average_precision"] == pytest.approx(1.0)


def test_expected_calibration_error_on_a_known_example():
    probabilities = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    true = np.array([0, 1, 0, 1])
    # bin 0.9-1.0: confidence 0.9, accuracy 0.5 (2 of 4); bin 0.6: 0.6 vs 1; bin 0.7: 0.7 vs 1
    assert expected_calibration_error(probabilities, true) == pytest.approx(0.4 * 2 / 4 + 0.4 / 4 + 0.3 / 4)
    bins = reliability_bins(probabilities, true)
    assert len(bins) == 10 and [b["count"] for b in bins] == [0, 0, 0, 0, 0, 0, 1, 1, 0, 2]
    assert expected_calibration_error(np.array([[1.0, 0.0, 0.0]]), np.array([0])) == 0.0  # 1.0 is in the last bin


def test_calibration_before_and_after_temperature(hand_metrics):
    calibration = hand_metrics["calibration"]
    # after: bins 5 {0.5 ✗}, 6 {0.6 ✓, 0.6 ✓}, 7 {0.7 ✗, 0.7 ✓}, 8 {0.8 ✓}, 9 {0.9 ✓, 0.95 ✗}
    assert calibration["ece_after"] == pytest.approx((0.5 + 2 * 0.4 + 2 * 0.2 + 0.2 + 2 * 0.425) / 8)
    # before: everything at confidence 1.0 with accuracy 5/8
    assert calibration["ece_before"] == pytest.approx(3 / 8)
    assert calibration["temperature"] == 1.5 and calibration["bins"] == 10
    assert calibration["reliability"]["before"][9]["count"] == 8


def test_breakdowns_by_brand_genre_and_length(hand_metrics):
    breakdowns = hand_metrics["breakdowns"]
    assert list(breakdowns["by_brand"]) == ["小米", "华为"]
    assert breakdowns["by_brand"]["小米"]["n_paragraphs"] == 5
    assert breakdowns["by_brand"]["小米"]["n_articles"] == 2
    assert breakdowns["by_brand"]["小米"]["stance_accuracy"] == pytest.approx(3 / 5)
    assert breakdowns["by_brand"]["华为"]["stance_accuracy"] == pytest.approx(2 / 3)
    genres = breakdowns["by_genre"]
    assert {g: v["n_paragraphs"] for g, v in genres.items()} == {"news": 3, "(unknown)": 3, "self_media": 2}
    assert genres["self_media"]["stance_accuracy"] == pytest.approx(1 / 2)
    assert {k: v["n_paragraphs"] for k, v in breakdowns["by_length"].items()} == {"1-20": 7, "51-100": 1}
    assert [length_bucket("x" * n) for n in (1, 20, 21, 100, 101, 201)] == [
        "1-20", "1-20", "21-50", "51-100", "101-200", "201+"]


def test_article_breakdown_labeled_against_predicted(hand_metrics):
    articles = {a["article_id"]: a for a in hand_metrics["breakdowns"]["by_article"]}
    assert list(articles) == ["a1", "a2", "a3"]
    a1 = articles["a1"]  # three paragraphs of equal length
    assert a1["true"]["counts"] == {"praise": 1, "critique": 1, "neutral": 1}
    assert a1["predicted"]["counts"] == {"praise": 2, "critique": 1, "neutral": 0}
    assert a1["true"]["shares"] == pytest.approx({s: 1 / 3 for s in STANCES}, abs=1e-4)
    assert a1["predicted"]["shares"]["praise"] == pytest.approx(2 / 3, abs=1e-4)
    assert a1["true"]["net_stance"] == pytest.approx(0.0)
    assert a1["predicted"]["net_stance"] == pytest.approx(1 / 3, abs=1e-4)
    assert a1["stance_accuracy"] == pytest.approx(2 / 3)
    # a3: shares weighted by length (10, 10, len(LONG)); labeled neutral/praise/critique, predicted neutral/critique²
    a3, total = articles["a3"], 20 + len(LONG)
    assert a3["true"]["net_stance"] == pytest.approx((10 - len(LONG)) / total, abs=1e-4)
    assert a3["predicted"]["net_stance"] == pytest.approx(-(10 + len(LONG)) / total, abs=1e-4)
    assert a3["net_stance_error"] == pytest.approx(-20 / total, abs=1e-3)
    mae = np.mean([abs(a["net_stance_error"]) for a in articles.values()])
    assert hand_metrics["breakdowns"]["article_net_stance_mae"] == pytest.approx(mae)


def test_most_confident_mistakes_come_first(hand_metrics):
    errors = hand_metrics["errors"]
    assert errors["stance_mistakes"] == 3
    # mistakes at confidence 0.95 (a3-p1), 0.7 (a1-p2), 0.5 (a2-p1); top_errors=2 keeps the first two
    assert [e["id"] for e in errors["most_confident"]] == ["a3-p1", "a1-p2"]
    first = errors["most_confident"][0]
    assert (first["true"], first["predicted"], first["brand"]) == ("praise", "critique", "华为")
    assert first["confidence"] == pytest.approx(0.95) and first["true_probability"] == pytest.approx(0.03)
    assert first["text"] == "华为芯片性能很出色。" and first["predicted_topics"] == ["quality"]


def test_baseline_comparison(hand_metrics):
    majority = hand_metrics["baselines"]["majority"]
    assert majority["stance"]["accuracy"] == pytest.approx(3 / 8)
    # praise: precision 3/8, recall 1 → F1 6/11; the other two classes 0
    assert majority["stance"]["macro_f1"] == pytest.approx(2 / 11)
    difference = majority["model_minus_baseline"]
    assert difference["stance_macro_f1"] == pytest.approx(11 / 18 - 2 / 11)
    assert difference["topics_micro_f1"] == pytest.approx(2 / 3)
    low, high = difference["stance_macro_f1_ci"]
    assert low <= high and isinstance(difference["ci_excludes_zero"], bool)


def test_intervals_sit_beside_their_figures(hand_metrics):
    stance = hand_metrics["stance"]
    for node, key in ((stance, "accuracy"), (stance, "macro_f1"), (stance["per_class"]["praise"], "f1"),
                      (stance["per_class"]["neutral"], "recall"), (hand_metrics["topics"], "micro_f1")):
        low, high = node[f"{key}_ci"]
        assert 0.0 <= low <= high <= 1.0
    assert stance["accuracy_ci"][0] < stance["accuracy"] < stance["accuracy_ci"][1]
    assert hand_metrics["bootstrap"] == {"unit": "article", "resamples": 200, "seed": 3, "level": 0.95}


def test_bootstrap_interval_is_one_when_every_article_is_perfect():
    records = [{"id": f"{a}-p{i}", "article_id": a, "brand": "小米", "text": SHORT, "stance": stance,
                "topics": ["quality"] if i == 0 else []}
               for a in ("x", "y", "z", "w") for i, stance in enumerate(STANCES)]
    perfect = Predictions(stance_probs=np.array([np.eye(3)[STANCES.index(r["stance"])] * 0.9 + 0.1 / 3
                                                 for r in records]),
                          topic_probs=np.array([[0.0, 0.9 if r["topics"] else 0.1, 0.0, 0.0] for r in records]),
                          topic_thresholds=dict.fromkeys(TOPICS, 0.5))
    metrics = compute_metrics(records, perfect, settings=EvalSettings(resamples=300, seed=1))
    stance = metrics["stance"]
    assert stance["accuracy"] == 1.0 and stance["accuracy_ci"] == [1.0, 1.0]
    assert stance["macro_f1_ci"] == [1.0, 1.0]
    for label in STANCES:
        assert stance["per_class"][label]["f1_ci"] == [1.0, 1.0]
    assert metrics["errors"]["most_confident"] == [] and metrics["calibration"]["ece_before"] is None


def test_resamples_draw_whole_articles_with_a_fixed_seed():
    articles = ["a"] * 3 + ["b"] * 2 + ["c"]
    for indices in article_resamples(articles, resamples=50, seed=7):
        drawn = [articles[i] for i in indices]  # every drawn article brings all its paragraphs
        assert drawn.count("a") % 3 == 0 and drawn.count("b") % 2 == 0
        assert drawn.count("a") // 3 + drawn.count("b") // 2 + drawn.count("c") == 3
    first = [list(x) for x in article_resamples(articles, 5, seed=7)]
    assert first == [list(x) for x in article_resamples(articles, 5, seed=7)]
    # one article all right, one all wrong: per-article resampling gives accuracies 0, 1/2 or 1 only
    correct = np.array([1, 1, 1, 0, 0, 0])
    seen = []

    def statistic(indices):
        seen.append(correct[indices].mean())
        return {"accuracy": correct[indices].mean()}

    interval = bootstrap_intervals(["r"] * 3 + ["w"] * 3, statistic, resamples=200, seed=0)
    assert set(seen) <= {0.0, 0.5, 1.0} and len(set(seen)) == 3
    assert interval["accuracy"] == (0.0, 1.0)


def test_reports_render_every_table(hand_metrics):
    figures = draw_figures(hand_metrics, hand_records(), hand_predictions())
    assert set(figures) == {"confusion_matrix", "precision_recall", "reliability", "net_stance"}
    assert all(png.startswith(b"\x89PNG") for png in figures.values())
    page = render_html(hand_metrics, figures)
    markdown = render_markdown(hand_metrics, {name: f"plots/{name}.png" for name in figures})
    for heading in ("Summary", "Stance", "Topics", "Calibration", "Baselines", "Breakdowns",
                    "Most confident stance mistakes"):
        assert f"<h2>{heading}</h2>" in page and f"## {heading}\n" in markdown
    assert page.count("data:image/png;base64,") == 4
    assert "华为芯片性能很出色。" in page and "华为芯片性能很出色。" in markdown
    assert "0.625 [" in markdown  # accuracy with its interval


def test_split_paths_from_another_machine_resolve_in_this_repo(tmp_path):
    foreign = "/home/someone/work/lichang/data/splits/train.jsonl"
    assert find_in_repo(foreign) == REPO_ROOT / "data" / "splits" / "train.jsonl"
    assert find_in_repo(tmp_path / "nowhere" / "x.jsonl") is None
    fallback = write_jsonl(tmp_path / "fallback.jsonl", [])
    assert resolve_split_files(["/nowhere/at/all.jsonl"], fallback) == [fallback]


# ------------------------------------------------------------------ command line
PARAGRAPHS = [
    ("比亚迪本月销量再创新高,海外订单翻倍。", "praise", []),
    ("车主集体投诉比亚迪刹车异响,维权群已有三百人。", "critique", ["quality", "user_community"]),
    ("比亚迪将于下周在深圳举行发布会。", "neutral", ["marketing"]),
    ("法院判决比亚迪赔偿车主十万元。", "critique", ["legal"]),
]


def corpus(path: Path, articles: int, prefix: str = "t", brand: str = "比亚迪") -> Path:
    lines = []
    for a in range(articles):
        for i, (text, stance, topics) in enumerate(PARAGRAPHS):
            lines.append(json.dumps({"id": f"{prefix}{a}-p{i:03d}", "article_id": f"{prefix}{a}", "brand": brand,
                                     "genre": "news", "text": text, "stance": stance, "topics": topics},
                                    ensure_ascii=False))
    return write_jsonl(path, lines)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tiny_encoder_dir) -> Path:
    import torch

    from lichang.models.classifier import StanceTopicModel

    folder = tmp_path_factory.mktemp("eval")
    config = LichangConfig(base_encoder=str(tiny_encoder_dir), train_files=[str(corpus(folder / "train.jsonl", 3))],
                           dev_files=[str(corpus(folder / "dev.jsonl", 2, "d"))], trainable_layers=1, max_length=48,
                           window_stride=8)
    torch.manual_seed(0)
    model = StanceTopicModel.from_base(config)
    model.calibration.temperature = 2.0
    return model.save_pretrained(folder / "model")


def test_eval_command_writes_a_self_contained_report(tmp_path, tiny_model, capsys):
    data = corpus(tmp_path / "test.jsonl", 3, "x")
    out = tmp_path / "report"
    code = main(["eval", "--model", str(tiny_model), "--data", str(data), "--out", str(out), "--resamples", "30",
                 "--quiet", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["n_paragraphs"] == 12
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert (out / "report.md").read_text(encoding="utf-8").startswith("# lichang evaluation report")
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["n_paragraphs"] == 12
    for path in ("stance.accuracy", "stance.macro_f1", "stance.per_class.praise.f1", "stance.per_class.critique.f1",
                 "stance.per_class.neutral.f1", "topics.micro_f1", "topics.macro_f1", "topics.per_label.legal.f1",
                 "topics.per_label.user_community.f1", "calibration.ece_before", "calibration.ece_after",
                 "baselines.majority.stance.macro_f1", "baselines.tfidf_logreg.stance.macro_f1",
                 "baselines.snownlp.stance.macro_f1", "cost.paragraphs_per_second", "cost.model_dir_bytes",
                 "cost.memory_bytes"):
        node = metrics
        for key in path.split("."):
            node = node[key]
        assert isinstance(node, int | float), path
    assert len(metrics["stance"]["macro_f1_ci"]) == 2
    assert metrics["data"]["overlap_with_train"] == 12  # the tiny test repeats the training texts
    assert metrics["model"]["temperature"] == 2.0
    assert metrics["breakdowns"]["by_genre"]["news"]["n_paragraphs"] == 12


def test_eval_without_baselines_restricted_to_a_brand(tmp_path, tiny_model, capsys):
    data = tmp_path / "mixed.jsonl"
    lines = (corpus(tmp_path / "a.jsonl", 2, "a").read_text(encoding="utf-8")
             + corpus(tmp_path / "b.jsonl", 1, "b", brand="小米").read_text(encoding="utf-8"))
    data.write_text(lines, encoding="utf-8")
    out = tmp_path / "report"
    code = main(["eval", "--model", str(tiny_model), "--data", str(data), "--out", str(out), "--brand", "小米",
                 "--no-baselines", "--resamples", "0", "--quiet"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["n_paragraphs"] == 4 and metrics["data"]["brand"] == "小米"
    assert metrics["baselines"] == {} and "accuracy_ci" not in metrics["stance"]


def test_unknown_label_fails_with_file_and_line(tmp_path, capsys):
    good = json.dumps({"id": "a-p0", "article_id": "a", "brand": "小米", "text": "小米发布新车。", "stance": "neutral",
                       "topics": []}, ensure_ascii=False)
    bad = good.replace('"a-p0"', '"a-p1"').replace('"neutral"', '"positive"')
    data = write_jsonl(tmp_path / "bad.jsonl", [good, bad])
    code = main(["eval", "--model", str(tmp_path / "no-model"), "--data", str(data), "--out", str(tmp_path / "o")])
    error = capsys.readouterr().err
    assert code == 2
    assert f"{data}:2" in error and "unknown stance 'positive'" in error


def test_missing_field_fails_with_file_and_line(tmp_path, capsys):
    record = {"id": "a-p0", "article_id": "a", "brand": "小米", "text": "小米发布新车。", "topics": []}
    data = write_jsonl(tmp_path / "missing.jsonl", [json.dumps(record, ensure_ascii=False)])
    assert main(["eval", "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert f"{data}:1" in error and "missing field(s) stance" in error


def test_brand_missing_from_the_data_is_an_error(tmp_path, capsys):
    data = corpus(tmp_path / "test.jsonl", 1)
    code = main(["eval", "--data", str(data), "--out", str(tmp_path / "o"), "--brand", "特斯拉"])
    error = capsys.readouterr().err
    assert code == 2
    assert "'特斯拉' is not in" in error and "比亚迪 (4)" in error
    assert not (tmp_path / "o").exists()


def test_two_brand_pairs_count_how_often_the_model_tells_the_brands_apart(hand_metrics):
    def row(rid, brand, stance):
        return {"id": rid, "article_id": "x", "brand": brand, "text": "华为卖得火爆,反观苹果销量下滑", "stance": stance}

    records = [row("x-p0", "华为", "praise"), row("x-p0-t2", "苹果", "critique"),  # told apart, both right
               row("x-p1", "华为", "praise"), row("x-p1-t2", "苹果", "critique"),  # same stance for both
               row("x-p2", "华为", "praise"), row("x-p2-t2", "苹果", "praise"),  # same labels: not counted
               row("x-p3", "华为", "critique"), row("x-p3-t2", "苹果", "praise")]  # apart, both wrong
    predicted = ["praise", "critique", "praise", "praise", "praise", "praise", "praise", "critique"]
    assert two_brand_pairs(records, predicted) == {
        "pairs": 4, "pairs_with_different_stances": 3, "both_right": 1, "predicted_different": 2,
        "both_right_share": 1 / 3}
    assert hand_metrics["breakdowns"]["two_brand_pairs"]["pairs"] == 0  # the hand-made set has no -t2 rows
