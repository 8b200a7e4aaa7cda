import json

from lichang.config import DATA_DIR, REPO_ROOT
from lichang.paragraphs import is_boilerplate, split_paragraphs


def test_paragraphs_are_trimmed_non_empty_lines():
    text = "  标题  \n\n第一段。\r\n   \n\t第二段。 \n"
    assert split_paragraphs(text) == ["标题", "第一段。", "第二段。"]
    assert split_paragraphs(" \n \n") == []


def test_boilerplate_examples_from_labels_md():
    for line in ["![]()", "![图片](http://x/y.png)", "图源:微博", "作者 / 魏力", "01.", "扫一扫关注微信",
                 "回复电商领取资料", "本报记者 周启航 杭州报道", "記者林怡君/台北報導", "#小米汽车 #SU7",
                 "图:视觉中国", "图片 | 网络",
                 "图:视觉中国/Getty Images", "图:新华社记者 李某 摄", "图 | 受访者供图", "图:", "图:张三"]:
        assert is_boilerplate(line), line


def test_content_lines_are_not_boilerplate():
    for line in ["站在车顶维权的车主", "小米汽车交付突破50万台。", "信任的崩塌", "什么意思?",
                 "扫码支付的使用率在补贴结束后一周就掉了一半,大家又回去用现金了。",
                 "图:在深圳华强北经营电子元件档口的刘老板,用微业贷周转了三年", "图:试驾日排队签到的车主",
                 "圖:開幕首日,尖沙咀門店外的人龍一直排到街角"]:
        assert not is_boilerplate(line), line


def test_every_labeled_line_the_service_treats_as_boilerplate_is_labeled_neutral_without_topic():
    """The service gives boilerplate no weight; a content line caught by the patterns would lose its label."""
    files = sorted((DATA_DIR / "written").glob("*.jsonl")) + sorted((REPO_ROOT / "seeds" / "labeled").glob("*.jsonl"))
    records = [json.loads(line) for path in files for line in path.read_text(encoding="utf-8").splitlines()]
    caught = [r for r in records if is_boilerplate(r["text"])]
    assert len(caught) > 500  # 558 on 2026-12-01
    wrong = [(r["id"], r["stance"], r["topics"]) for r in caught if r["stance"] != "neutral" or r["topics"]]
    assert wrong == []
