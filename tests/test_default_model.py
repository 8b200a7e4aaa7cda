"""The shipped default model on unambiguous paragraphs written for these tests, and `lichang predict`.

None of these paragraphs is in the training data; the brands are invented, so the model must read what
the paragraph says about the target rather than recall a name. The two-brand case lives in
test_service.py (through HTTP).
"""

from __future__ import annotations

import io
import json

import pytest

from lichang.cli import main
from lichang.config import DEFAULT_MODEL_DIR
from lichang.models.classifier import StanceTopicModel
from lichang.models.scorer import ParagraphInput, Scorer

pytestmark = pytest.mark.slow

# (brand, paragraph, stance, a topic that must be over its threshold or None for "no topic at all")
UNAMBIGUOUS = [
    ("格瑞空调", "格瑞空调新款机型实测噪音只有18分贝,制冷速度比上一代快了三成,拆机后内部做工扎实,挑不出毛病。",
     "praise", "quality"),
    ("澄湖乳业", "市场监管部门通报,澄湖乳业因虚标蛋白质含量被罚款两百万元,法院还受理了多起消费者就此提起的诉讼。",
     "critique", "legal"),
    ("蓝岛手机", "不少蓝岛手机用户在论坛集体吐槽,升级系统后电池一天要充三次,找售后却一直被说成是个别现象。",
     "critique", "user_community"),
    ("麦香坊", "麦香坊这次的春节广告片在朋友圈刷屏,温情的故事配上巧妙的产品植入,被营销圈称为今年最成功的品牌传播。",
     "praise", "marketing"),
    ("星辰航空", "星辰航空将于下月十二日在上海召开年度股东大会,审议董事会换届等议案。", "neutral", None),
]


@pytest.fixture(scope="module")
def scorer():
    return Scorer(StanceTopicModel.from_pretrained(DEFAULT_MODEL_DIR))


@pytest.mark.parametrize(("brand", "text", "stance", "topic"), UNAMBIGUOUS, ids=[row[0] for row in UNAMBIGUOUS])
def test_unambiguous_paragraphs(scorer, brand, text, stance, topic):
    result = scorer.score([ParagraphInput(text, brand)])[0]
    assert result.stance == stance, result.stance_scores
    assert result.stance_scores[stance] > 0.5
    if topic is None:
        assert result.topics == [], result.topic_scores
    else:
        assert topic in result.topics, result.topic_scores


def test_predict_prints_json_lines_for_an_argument_and_a_table_for_stdin(capsys, monkeypatch):
    brand, text, stance, topic = UNAMBIGUOUS[0]
    assert main(["predict", "--brand", brand, "--json", f"{text}\n![](img.png)"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["index"] for line in lines] == [0, 1]
    assert lines[0]["stance"]["label"] == stance and topic in lines[0]["topics"]["labels"]
    assert lines[1]["boilerplate"] is True

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(UNAMBIGUOUS[1][1].encode("utf-8"))))
    assert main(["predict", "--brand", UNAMBIGUOUS[1][0]]) == 0
    table = capsys.readouterr().out
    assert "critique" in table.splitlines()[1] and "1 scored paragraphs" in table


def test_predict_bad_input_fails_with_a_clear_message(tmp_path, capsys):
    gbk = tmp_path / "gbk.txt"
    gbk.write_bytes(UNAMBIGUOUS[0][1].encode("gbk"))
    assert main(["predict", "--brand", "格瑞空调", "--file", str(gbk)]) == 2
    assert "is not valid UTF-8" in capsys.readouterr().err
    assert main(["predict", "--brand", "格瑞空调", "  \n\n "]) == 2
    assert "no text to score" in capsys.readouterr().err
    assert main(["predict", "--brand", "格瑞空调", "--model", str(tmp_path / "nowhere"), "好"]) == 2
    assert "nowhere" in capsys.readouterr().err
