import pytest

from lichang.schema import STANCES, TOPICS, LabelError, check_stance, check_topics


def test_labels_match_labels_md():
    text = (__import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "LABELS.md")
    if not text.is_file():
        pytest.skip("../shared/LABELS.md is not beside the repository")
    content = text.read_text(encoding="utf-8")
    for label in (*STANCES, *TOPICS):
        assert f"`{label}`" in content


def test_unknown_labels_are_rejected_with_their_names():
    assert check_stance("praise") == "praise"
    with pytest.raises(LabelError, match="'positive'"):
        check_stance("positive")
    with pytest.raises(LabelError, match="finance"):
        check_topics(["quality", "finance"])
    with pytest.raises(LabelError, match="list"):
        check_topics("quality")
    with pytest.raises(LabelError, match="repeat"):
        check_topics(["legal", "legal"])
