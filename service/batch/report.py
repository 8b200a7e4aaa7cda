"""The morning report (one self-contained HTML page) and the day's exports (JSONL, Parquet).

A day's numbers pool the day's non-boilerplate paragraphs, weighted by their
length, exactly as an ArticleSummary weighs one article's paragraphs: the share
of a stance is its characters over all characters, and net stance is the
praise share minus the critique share. An article belongs to the day of its
published_at, or, when it has none, to the run date it was first stored under.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from lichang.schema import STANCE_SIGN, STANCES, TOPICS
from lichang.service.batch.store import Store, as_utc

COLOURS = {"praise": "#2e9d5b", "neutral": "#b8bcc2", "critique": "#d64541"}
PLOT_ORDER = ("praise", "neutral", "critique")
TREND_BRANDS = 10  # the busiest brands in the trend plot; the table lists them all
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei",
             "SimHei", "Microsoft YaHei", "PingFang SC", "Droid Sans Fallback", "AR PL UMing CN")
EXPORT_FORMATS = ("jsonl", "parquet")


class ReportError(ValueError):
    """A report or export that cannot be written as asked."""


# ------------------------------------------------------------------ numbers
def stance_shares(chars: dict[str, int]) -> dict[str, float]:
    total = sum(chars.values())
    return {s: (chars.get(s, 0) / total if total else 0.0) for s in STANCES}


def net_stance(chars: dict[str, int]) -> float:
    shares = stance_shares(chars)
    return sum(STANCE_SIGN[s] * shares[s] for s in STANCES)


def _pool(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    chars: dict[str, int] = defaultdict(int)
    for row in rows:
        chars[row["stance"]] += len(row["text"])
    return chars


def day_numbers(rows: Sequence[dict[str, Any]], top: int) -> dict[str, Any]:
    """Shares by brand and by topic, and the most critical paragraphs per brand, from the day's paragraph rows."""
    content = [r for r in rows if not r["boilerplate"]]
    by_brand: dict[str, list[dict[str, Any]]] = defaultdict(list)
    topic_chars: dict[tuple[str, str | None], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    topic_paragraphs: dict[str, int] = defaultdict(int)
    for row in content:
        by_brand[row["brand"]].append(row)
        for topic in row["topics"]:
            for key in ((topic, None), (topic, row["brand"])):
                topic_chars[key][row["stance"]] += len(row["text"])
            topic_paragraphs[topic] += 1
    brands = sorted(by_brand, key=lambda b: (-len(by_brand[b]), b))
    articles: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        articles[row["brand"]].add(row["article_id"])
    brand_table = [{"brand": b, "articles": len(articles[b]), "paragraphs": len(by_brand[b]),
                    "shares": stance_shares(_pool(by_brand[b])), "net": net_stance(_pool(by_brand[b]))}
                   for b in brands]
    topic_table = [{"topic": t, "paragraphs": topic_paragraphs[t], "shares": stance_shares(topic_chars[(t, None)]),
                    "net": net_stance(topic_chars[(t, None)]),
                    "by_brand": {b: net_stance(topic_chars[(t, b)]) if (t, b) in topic_chars else None
                                 for b in brands}}
                   for t in TOPICS]
    critical = {}
    for brand in brands:
        chosen = sorted((r for r in by_brand[brand] if r["stance"] == "critique"),
                        key=lambda r: (-r["stance_critique"], r["article_id"], r["paragraph_index"]))
        critical[brand] = chosen[:top]
    return {"brands": brands, "brand_table": brand_table, "topic_table": topic_table, "critical": critical,
            "articles": len({(r["article_id"], r["brand"]) for r in rows}), "paragraphs": len(rows),
            "content_paragraphs": len(content)}


def trend(store: Store, day: date, days: int) -> tuple[list[date], dict[str, list[float | None]]]:
    """Net stance per brand for each of the `days` days ending on `day` (None where a brand had no paragraphs)."""
    start = day - timedelta(days=days - 1)
    chars: dict[tuple[str, date], dict[str, int]] = defaultdict(dict)
    for when, brand, stance, count, _ in store.stance_chars(start, day):
        chars[(brand, when)][stance] = count
    dates = [start + timedelta(days=i) for i in range(days)]
    brands = sorted({brand for brand, _ in chars})
    return dates, {b: [net_stance(chars[(b, d)]) if (b, d) in chars else None for d in dates] for b in brands}


# -------------------------------------------------------------------- plots
def _cjk_font() -> str | None:
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in installed), None)


def plot_labels(brands: Sequence[str]) -> dict[str, str]:
    """Brand names as plotted: as they are when a font can draw them, else B1, B2 … (the tables give the key)."""
    can_draw = _cjk_font() is not None
    return {b: b if can_draw or b.isascii() else f"B{i}" for i, b in enumerate(brands, start=1)}


def _figure(height: float) -> Any:
    """A pyplot-free figure (no GUI backend, safe under cron), with a CJK font first when one is installed."""
    import matplotlib
    from matplotlib.figure import Figure

    font = _cjk_font()
    if font and matplotlib.rcParams["font.sans-serif"][:1] != [font]:
        matplotlib.rcParams["font.sans-serif"] = [font, *matplotlib.rcParams["font.sans-serif"]]
    return Figure(figsize=(8, height), dpi=100, layout="constrained")


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def stacked_shares_png(labels: Sequence[str], shares: Sequence[dict[str, float]], title: str) -> str:
    figure = _figure(1.5 + 0.38 * max(1, len(labels)))
    axes = figure.subplots()
    positions = list(range(len(labels)))[::-1]
    left = [0.0] * len(labels)
    for stance in PLOT_ORDER:
        widths = [s[stance] for s in shares]
        axes.barh(positions, widths, left=left, color=COLOURS[stance], label=stance, height=0.7)
        for y, x, w in zip(positions, left, widths, strict=True):
            if w >= 0.08:
                axes.text(x + w / 2, y, f"{w:.0%}", ha="center", va="center", fontsize=8, color="white")
        left = [a + b for a, b in zip(left, widths, strict=True)]
    axes.set_yticks(positions, labels)
    axes.set_xlim(0, 1)
    axes.xaxis.set_major_formatter("{x:.0%}")
    axes.set_title(title, fontsize=11)
    figure.legend(*axes.get_legend_handles_labels(), ncols=3, loc="outside lower center", frameon=False, fontsize=8)
    return _png(figure)


def trend_png(dates: Sequence[date], series: dict[str, list[float | None]], labels: dict[str, str]) -> str:
    figure = _figure(3.6)
    axes = figure.subplots()
    for brand, values in series.items():
        axes.plot(dates, [float("nan") if v is None else v for v in values], marker="o", markersize=3,
                  label=labels.get(brand, brand))
    axes.axhline(0, color="#888", linewidth=0.8)
    axes.set_ylim(-1, 1)
    axes.set_ylabel("net stance (praise − critique)")
    axes.set_xticks(dates, [d.strftime("%m-%d") for d in dates])
    if series:
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    axes.set_title(f"net stance per brand, {dates[0]} to {dates[-1]}", fontsize=11)
    return _png(figure)


# --------------------------------------------------------------------- HTML
CSS = """
body{font-family:-apple-system,"Segoe UI","Noto Sans CJK SC","PingFang SC","Microsoft YaHei",sans-serif;
margin:2em auto;max-width:1000px;color:#222;line-height:1.45;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.pos{color:#2e7d4f}.neg{color:#c0392b}.muted{color:#777;font-size:.85em}img{max-width:100%}
blockquote{margin:.3em 0;padding:.3em .8em;border-left:3px solid #d64541;background:#fbf3f3}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _signed(value: float | None) -> str:
    if value is None:
        return '<span class="muted">–</span>'
    kind = "pos" if value > 0.005 else "neg" if value < -0.005 else ""
    return f'<span class="{kind}">{value:+.2f}</span>'


def _img(png: str, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{png}">'


def build_report(store: Store, day: date, days: int = 7, top: int = 5) -> str:
    """The morning report for `day` as one HTML page (plots embedded as base64 PNG, no outside files)."""
    if days < 2 or top < 0:
        raise ReportError(f"--days must be 2 or more (got {days}) and --top 0 or more (got {top})")
    rows = store.day_paragraphs(day)
    numbers = day_numbers(rows, top)
    dates, series = trend(store, day, days)
    brands = numbers["brands"]
    labels = plot_labels(list(dict.fromkeys([*brands, *sorted(series)])))
    run = store.last_run()
    failed = store.day_failures(day)
    parts = [f"<!doctype html><html lang='zh'><head><meta charset='utf-8'><title>lichang report {day}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>Brand stance, {day}</h1>",
             f"<p>{numbers['articles']} article(s), {numbers['content_paragraphs']} scored paragraphs "
             f"({numbers['paragraphs'] - numbers['content_paragraphs']} boilerplate, not counted), "
             f"{len(brands)} brand(s), {len(failed)} unreadable record(s). "
             f"Shares are length-weighted; net stance = praise share − critique share, in [−1, 1].</p>"]
    models = sorted({(r["model_name"], r["model_version"]) for r in rows})
    if models:
        parts.append(f"<p class='muted'>Model: {_e(', '.join(f'{n} {v}' for n, v in models))}</p>")
    if run:
        started = as_utc(run["started_at"])
        parts.append(f"<p class='muted'>Last run #{run['id']}: {_e(run['status'])}, started "
                     f"{started:%Y-%m-%d %H:%M} UTC, scored {run['scored']}, skipped {run['skipped']}, failed "
                     f"{run['failed']}.</p>")
    if not rows:
        parts.append(f"<p><b>No articles are dated {day} in this store.</b></p>")
    else:
        parts.append("<h2>Stance by brand</h2>")
        parts.append(_img(stacked_shares_png([labels[b] for b in brands], [t["shares"] for t in numbers["brand_table"]],
                                             f"stance shares by brand, {day}"), "stance shares by brand"))
        keyed = any(labels[b] != b for b in brands)
        if keyed:
            parts.append("<p class='muted'>No CJK font is installed, so the plots name brands by key (B1, B2 …; "
                         "see the table). Install one, e.g. <code>apt-get install fonts-noto-cjk</code>, and clear "
                         "matplotlib's font cache (<code>~/.cache/matplotlib</code>).</p>")
        header = "".join(f"<th>{s}</th>" for s in STANCES)
        parts.append(f"<table><tr><th>brand</th>{'<th>plot key</th>' if keyed else ''}<th>articles</th>"
                     f"<th>paragraphs</th>{header}<th>net</th><th>Δ vs previous day</th>"
                     "<th>Δ vs previous days' mean</th></tr>")
        for t in numbers["brand_table"]:
            previous = [v for v in series.get(t["brand"], [])[:-1] if v is not None]
            yesterday = series.get(t["brand"], [None, None])[-2]
            cells = "".join(f"<td class='n'>{t['shares'][s]:.0%}</td>" for s in STANCES)
            key = f"<td>{_e(labels[t['brand']])}</td>" if keyed else ""
            parts.append(
                f"<tr><td>{_e(t['brand'])}</td>{key}<td class='n'>{t['articles']}</td>"
                f"<td class='n'>{t['paragraphs']}</td>{cells}<td class='n'>{_signed(t['net'])}</td>"
                f"<td class='n'>{_signed(None if yesterday is None else t['net'] - yesterday)}</td>"
                f"<td class='n'>{_signed(t['net'] - sum(previous) / len(previous) if previous else None)}</td></tr>")
        parts.append("</table>")
        parts.append("<h2>Stance by topic</h2>")
        topic_table = numbers["topic_table"]
        parts.append(_img(stacked_shares_png([f"{t['topic']} ({t['paragraphs']})" for t in topic_table],
                                             [t["shares"] for t in topic_table], f"stance shares by topic, {day}"),
                          "stance shares by topic"))
        brand_heads = "".join(f"<th>{_e(b)}</th>" for b in brands)
        parts.append(f"<p class='muted'>Net stance of the paragraphs with each topic, all brands and per brand."
                     f"</p><table><tr><th>topic</th><th>paragraphs</th><th>all</th>{brand_heads}</tr>")
        for t in topic_table:
            per_brand = "".join(f"<td class='n'>{_signed(t['by_brand'][b])}</td>" for b in brands)
            parts.append(f"<tr><td>{t['topic']}</td><td class='n'>{t['paragraphs']}</td>"
                         f"<td class='n'>{_signed(t['net'] if t['paragraphs'] else None)}</td>{per_brand}</tr>")
        parts.append("</table>")
    parts.append(f"<h2>Change over the last {days} days</h2>")
    if series:
        busiest = sorted(series, key=lambda b: -sum(v is not None for v in series[b]))[:TREND_BRANDS]
        shown = {b: series[b] for b in sorted(busiest)}
        parts.append(_img(trend_png(dates, shown, labels), "net stance per brand per day"))
        heads = "".join(f"<th>{d.strftime('%m-%d')}</th>" for d in dates)
        parts.append(f"<table><tr><th>brand</th>{heads}</tr>")
        for brand in sorted(series):
            cells = "".join(f"<td class='n'>{_signed(v)}</td>" for v in series[brand])
            parts.append(f"<tr><td>{_e(brand)}</td>{cells}</tr>")
        parts.append("</table>")
    else:
        parts.append("<p>No scored paragraphs in these days.</p>")
    if rows:
        parts.append(f"<h2>Most critical paragraphs (top {top} per brand)</h2>")
        for brand in brands:
            chosen = numbers["critical"][brand]
            parts.append(f"<h3>{_e(brand)}</h3>")
            if not chosen:
                parts.append("<p class='muted'>No critical paragraph.</p>")
            for r in chosen:
                topics = ", ".join(r["topics"]) or "no topic"
                where = f"{r['title'] or r['article_id']} ¶{r['paragraph_index']}"
                parts.append(f"<blockquote>{_e(r['text'])}<br><span class='muted'>critique "
                             f"{r['stance_critique']:.2f} · {_e(topics)} · {_e(where)}"
                             f"{' · ' + _e(r['source']) if r['source'] else ''}</span></blockquote>")
    if failed:
        parts.append(f"<h2>Unreadable records ({len(failed)})</h2><table><tr><th>file:line</th><th>id</th>"
                     "<th>reason</th></tr>")
        for f in failed:
            parts.append(f"<tr><td>{_e(f['input_file'])}:{f['line']}</td><td>{_e(f['record_id'])}</td>"
                         f"<td>{_e(f['reason'])}</td></tr>")
        parts.append("</table>")
    parts.append(f"<p class='muted'>Written {datetime.now().astimezone():%Y-%m-%d %H:%M %Z} by lichang batch report."
                 "</p></body></html>")
    return "\n".join(parts)


def _write_atomically(out: Path, data: bytes) -> None:
    """A killed report or export leaves the previous file, never half a file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, out)


def write_report(store: Store, day: date, out: str | Path, days: int = 7, top: int = 5) -> Path:
    out = Path(out)
    _write_atomically(out, build_report(store, day, days, top).encode("utf-8"))
    return out


# ------------------------------------------------------------------ exports
def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, date | datetime) else v for k, v in row.items()}


def export_schema() -> Any:
    import pyarrow as pa

    text, score = pa.string(), pa.float64()
    return pa.schema([
        ("article_id", text), ("brand", text), ("title", text), ("source", text), ("published_at", pa.date32()),
        ("report_date", pa.date32()), ("aliases", pa.list_(text)), ("model_name", text), ("model_version", text),
        ("scored_at", pa.timestamp("us", tz="UTC")), ("content_hash", text), ("article_net_stance", score),
        ("paragraph_index", pa.int32()), ("text", text), ("boilerplate", pa.bool_()), ("stance", text),
        *[(f"stance_{s}", score) for s in STANCES], ("topics", pa.list_(text)),
        *[(f"topic_{t}", score) for t in TOPICS], ("windows", pa.int32()),
    ])


def export_day(store: Store, day: date, fmt: str, out: str | Path) -> int:
    """The day's paragraphs with their article's fields, one row each; returns the number of rows."""
    if fmt not in EXPORT_FORMATS:
        raise ReportError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    rows = store.day_paragraphs(day)
    out = Path(out)
    if fmt == "jsonl":
        data = "".join(json.dumps(_jsonable(r), ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = export_schema()
        table = pa.Table.from_pylist([{name: r[name] for name in schema.names} for r in rows], schema=schema)
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        data = buffer.getvalue()
    _write_atomically(out, data)
    return len(rows)


def infer_format(out: str | Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix in EXPORT_FORMATS:
        return suffix
    raise ReportError(f"cannot tell the export format from {str(out)!r}: give --format jsonl or parquet")
