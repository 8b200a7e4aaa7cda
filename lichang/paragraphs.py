"""Articles into paragraphs (LABELS.md "Unit") and the boilerplate lines an article summary ignores."""

from __future__ import annotations

import re

# A "图:" line is a photo credit when what follows is this short, names an agency or ends in 摄/供图.
PHOTO_CREDIT_MAX_CHARS = 4
_CREDIT_WORDS = (r"(视觉中国|視覺中國|东方IC|東方IC|Getty|IC ?photo|新华社|新華社|图虫|圖蟲|网络|網絡|网图|"
                 r"受访者|受訪者|资料图|資料圖)")
_PHOTO_CREDIT = rf"(\S.{{0,{PHOTO_CREDIT_MAX_CHARS - 1}}}|{_CREDIT_WORDS}.*|.*(供图|供圖|摄|攝))?"

_BOILERPLATE = [
    re.compile(r"^!\[[^\]]*\]\([^)]*\)$"),  # image placeholder
    re.compile(r"^(图源|图片来源|来源|摄影|摄|圖源|圖片來源|來源)\s*[:：/|丨]"),  # photo credit / source
    # "图:视觉中国" is a credit; "图:试驾日排队签到的车主" is a caption with content (LABELS.md "Unit")
    re.compile(rf"^(图片|图|圖片|圖)\s*[:：/|丨]\s*{_PHOTO_CREDIT}$"),
    re.compile(r"^(作者|编辑|責編|责编|编者|撰文|出品|文|记者|記者|作者丨|主编)\s*[/／:：|丨]"),  # byline
    re.compile(r"^(出品|作者|编辑)\s*[/／:：|丨].*(作者|编辑)\s*[/／:：|丨]"),
    re.compile(r"^[(（]?\d{1,2}[)）]?[.、．]?$"),  # bare section number "01."
    re.compile(r"^(Part|PART)\s*\d+$"),
    re.compile(r"^(本报|本報)?(记者|記者)\s*\S{2,4}(\s*[/／]?\s*\S{2,3}(报道|報道|報導|报导))?$"),  # reporter line
    re.compile(r"^\S{2,3}(报道|報道)\s*(记者|記者)\s*\S{2,4}$"),
    re.compile(r"^(#[^#\s]+#?\s*)+$"),  # hashtag-only line
    re.compile(r"^[(（](作者|编辑|編輯|责编)[^)）]*[)）]$"),  # "(作者系…,仅代表个人观点)"
    re.compile(r"^\d{4}[-年./]\d{1,2}[-月./]\d{1,2}日?(\s*(来源|來源)\S*)?$"),  # dateline
    re.compile(r"^原创\s"),
    re.compile(r"^特此(公告|声明|聲明|通知)[。.]?$"),
    re.compile(r"^本文(图片|圖片|不构成|不構成|仅代表|僅代表)"),
]
_PROMO = re.compile(
    r"扫一扫|掃一掃|长按(识别|二维码)|關注我們|关注(我们|公众号|本号|“)|点个?在看|點個?在看|点赞.{0,4}在看|"
    r"回复.{0,10}(领取|获取)|设为?星标|置顶公众号|免责声明|版权(归|所有)|未经(授权|许可)|^[—-]*\s*END\s*[—-]*$"
)
PROMO_MAX_CHARS = 40


class ArticleError(ValueError):
    """An article that has no text to score."""


def split_paragraphs(text: str) -> list[str]:
    """One paragraph per non-empty line, trimmed (LABELS.md "Unit")."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def is_boilerplate(paragraph: str) -> bool:
    """Placeholders, credits, bylines, section numbers and promotional sign-offs: no weight in a breakdown."""
    text = paragraph.strip()
    if any(pattern.search(text) for pattern in _BOILERPLATE):
        return True
    return len(text) <= PROMO_MAX_CHARS and bool(_PROMO.search(text))
