"""The evaluation report's figures, drawn with matplotlib's Agg canvas and returned as PNG bytes.

Figures are built with `matplotlib.figure.Figure` rather than pyplot, so no
global backend or display is touched (works on servers and in tests). Labels
are English: no CJK font is needed.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def confusion_matrix_png(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> bytes:
    """Counts, coloured by the share of each true label's row (so rare classes are readable)."""
    counts = np.asarray(matrix, dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure = Figure(figsize=(4.6, 3.9))
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            axes.text(j, i, f"{int(counts[i, j])}\n{shares[i, j]:.0%}", ha="center", va="center",
                      color="white" if shares[i, j] > 0.6 else "black", fontsize=9)
    axes.set_xticks(range(len(labels)), labels)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("Stance confusion matrix")
    figure.colorbar(image, ax=axes, label="share of true row")
    return _png(figure)


def precision_recall_png(curves: dict[str, dict]) -> bytes:
    """One curve per topic, with the model's operating point (its threshold) marked."""
    figure = Figure(figsize=(5.6, 4.4))
    axes = figure.add_subplot()
    for topic, curve in curves.items():
        (line,) = axes.plot(curve["recall"], curve["precision"], label=f"{topic} (AP {curve['average_precision']:.2f})")
        axes.plot([curve["point_recall"]], [curve["point_precision"]], marker="o", color=line.get_color())
    axes.set_xlim(0, 1.02)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title("Topic precision-recall (dots: model thresholds)")
    axes.legend(loc="best", fontsize=8)
    axes.grid(alpha=0.3)
    return _png(figure)


def reliability_png(before: list[dict], after: list[dict], ece_before: float, ece_after: float) -> bytes:
    """Accuracy against confidence per bin, before and after temperature scaling."""
    figure = Figure(figsize=(8.4, 3.9))
    for k, (title, rows, ece) in enumerate((("before (temperature 1)", before, ece_before),
                                            ("after (model temperature)", after, ece_after))):
        axes = figure.add_subplot(1, 2, k + 1)
        centres = [(r["low"] + r["high"]) / 2 for r in rows]
        width = rows[0]["high"] - rows[0]["low"] if rows else 0.1
        axes.bar(centres, [r["accuracy"] for r in rows], width=width * 0.9, color="#4c72b0", label="accuracy")
        axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
        used = [r for r in rows if r["count"]]
        axes.plot([r["confidence"] for r in used], [r["accuracy"] for r in used], "o", color="#dd8452",
                  label="bin mean confidence")
        for centre, row in zip(centres, rows, strict=True):
            if row["count"]:
                axes.text(centre, min(row["accuracy"], 0.93) + 0.02, str(row["count"]), ha="center", fontsize=7)
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1)
        axes.set_xlabel("confidence (max probability)")
        axes.set_ylabel("accuracy")
        axes.set_title(f"{title}: ECE {ece:.3f}", fontsize=10)
        axes.legend(loc="upper left", fontsize=7)
    return _png(figure)


def net_stance_png(true: Sequence[float], predicted: Sequence[float]) -> bytes:
    """Each article's net stance (praise share − critique share), labeled against predicted."""
    figure = Figure(figsize=(4.4, 4.2))
    axes = figure.add_subplot()
    axes.plot([-1, 1], [-1, 1], linestyle="--", color="grey")
    axes.scatter(true, predicted, s=18, alpha=0.7)
    axes.set_xlim(-1.05, 1.05)
    axes.set_ylim(-1.05, 1.05)
    axes.set_xlabel("labeled net stance")
    axes.set_ylabel("predicted net stance")
    axes.set_title("Article net stance")
    axes.grid(alpha=0.3)
    return _png(figure)
