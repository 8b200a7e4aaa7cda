"""Brand-swap augmentation: rename the target so the model reads the context, not the name.

A classifier trained on a few dozen brands can learn that a name is usually
praised or criticised. Each epoch, a share of the training rows gets its target
(brand and aliases, in the text and in the target segment) replaced by another
name: a brand of the same industry from the training data or an invented one. Stance and topics do
not change, because `LABELS.md` labels what the text says about the target,
whatever it is called. Names that already appear in the paragraph are never
used, so a comparison never turns into a brand compared with itself.
"""

from __future__ import annotations

import random
import re

from lichang.models.classifier import name_variants

# Invented names, so that the model also sees targets it has no prior about (as with a brand it never met).
INVENTED_BRANDS = (
    "远澜汽车", "青禾电器", "星麦科技", "鹿鸣乳业", "川屿餐饮", "海旭航空", "白桦银行", "启明医药",
    "橙果游戏", "云栖酒店", "北辰保险", "栗子手机", "澄光家电", "禾味食品", "途乐旅行", "鲸跃电商",
    "Novaro", "Kestrel", "Lumio", "Vantix",
)


def replacement_pool(records: list[dict]) -> dict[str, list[str]]:
    """Per industry: the training brands of that industry plus the invented names (so a bank stays a bank)."""
    pools: dict[str, set[str]] = {}
    for record in records:
        pools.setdefault(record.get("industry", ""), set()).add(record["brand"])
    return {industry: sorted(names | set(INVENTED_BRANDS)) for industry, names in pools.items()}


def swap_target(record: dict, new_name: str) -> dict:
    """The same row about `new_name`: every mention of the old target in the text is renamed."""
    names = name_variants([record["brand"], *record.get("aliases", [])])
    pattern = re.compile("|".join(re.escape(n) for n in names), flags=re.IGNORECASE)
    return {**record, "text": pattern.sub(new_name, record["text"]), "brand": new_name, "aliases": []}


def augment_epoch(records: list[dict], share: float, pools: dict[str, list[str]],
                  rng: random.Random) -> list[dict]:
    """A copy of the training rows in which about `share` of them have a renamed target."""
    if share <= 0:
        return records
    out = []
    for record in records:
        if rng.random() >= share:
            out.append(record)
            continue
        old = {n.lower() for n in name_variants([record["brand"], *record.get("aliases", [])])}
        text = record["text"].lower()
        pool = pools.get(record.get("industry", ""), INVENTED_BRANDS)
        candidates = [n for n in pool if n.lower() not in old and n.lower() not in text
                      and not any(n.lower() in o or o in n.lower() for o in old)]
        out.append(swap_target(record, rng.choice(candidates)) if candidates else record)
    return out
