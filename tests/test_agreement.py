"""Agreement of a second labeling with the first: hand-worked figures, the CLI and its errors."""

import json

import pytest
from conftest import write_jsonl

from lichang.cli import main
from lichang.eval.agreement import AgreementError, label_agreement


def rows(labels):
    return [{"id": f"a1-p{i:03d}", "article_id": "a1", "brand": "岚拓", "text": f"第{i}段", "stance": stance,
             "topics": topics} for i, (stance, topics) in enumerate(labels)]


FIRST = rows([("praise", ["quality"]), ("critique", ["legal"]), ("neutral", []), ("neutral", ["marketing"])])
SECOND = rows([("praise", ["quality"]), ("critique", ["legal", "quality"]), ("neutral", []), ("praise", ["marketing"])])


def test_agreement_figures_match_the_hand_worked_values():
    result = label_agreement(FIRST, SECOND)
    assert result["n_rows"] == 4 and result["n_articles"] == 1
    assert result["stance"]["accuracy"] == pytest.approx(0.75)
    # p_o = 3/4; p_e = 1/4·2/4 + 1/4·1/4 + 2/4·1/4 = 5/16; kappa = (3/4 - 5/16) / (1 - 5/16) = 7/11
    assert result["stance"]["kappa"] == pytest.approx(7 / 11)
    assert result["stance"]["confusion"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    # 3 shared topic labels, 1 extra (quality on row 1): precision 3/4, recall 1, F1 6/7
    assert result["topics"]["micro_f1"] == pytest.approx(6 / 7)
    assert result["topics"]["exact_set_match"] == pytest.approx(0.75)
    assert result["topics"]["per_label"]["legal"]["kappa"] == pytest.approx(1.0)
    assert result["topics"]["per_label"]["user_community"]["kappa"] is None  # used by neither: undefined


def test_a_second_labeling_of_rows_the_reference_lacks_is_refused():
    stray = rows([("praise", [])])
    stray[0]["id"] = "zz-p000"
    with pytest.raises(AgreementError, match="zz-p000"):
        label_agreement(FIRST, stray)
    with pytest.raises(AgreementError, match="no rows"):
        label_agreement(FIRST, [])
    with pytest.raises(AgreementError, match="repeats id"):
        label_agreement(FIRST, [SECOND[0], SECOND[0]])
    moved = [dict(SECOND[0], text="另一段话")]
    with pytest.raises(AgreementError, match="another text or brand"):
        label_agreement(FIRST, moved)


def test_the_cli_prints_the_figures_and_json(tmp_path, capsys):
    first = write_jsonl(tmp_path / "first.jsonl", [json.dumps(r, ensure_ascii=False) for r in FIRST])
    second = write_jsonl(tmp_path / "second.jsonl", [json.dumps(r, ensure_ascii=False) for r in SECOND])
    assert main(["data", "agree", str(first), "--second", str(second)]) == 0
    out = capsys.readouterr().out
    assert "4 rows in 1 article(s) labeled twice" in out and "kappa 0.636" in out and "n/a (one label only)" in out
    assert main(["data", "agree", str(first), "--second", str(second), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stance"]["accuracy"] == pytest.approx(0.75)
    bad = write_jsonl(tmp_path / "bad.jsonl", ['{"id": "a1-p000", "stance": "positive"}'])
    assert main(["data", "agree", str(first), "--second", str(bad)]) == 2
    assert "problem" in capsys.readouterr().err
