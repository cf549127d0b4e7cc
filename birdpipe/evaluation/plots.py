"""Matplotlib figures written as PNGs, so the pictures can be seen offline (``dvc plots show`` writes HTML
that loads Vega from a CDN)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from birdpipe.common.outputs import atomic_path


def _save(figure: plt.Figure, target: str | Path) -> None:
    with atomic_path(target) as temporary:
        figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)


def confusion_matrix_png(y_true: np.ndarray, y_pred: np.ndarray, species: list[str], target: str | Path,
                         title: str) -> None:  # fmt: skip
    """Confusion matrix normalised by row (each true species sums to 1), species in model order."""
    n = len(species)
    matrix = np.zeros((n, n))
    np.add.at(matrix, (y_true, y_pred), 1)
    present = matrix.sum(axis=1) > 0
    rows = np.divide(matrix, matrix.sum(axis=1, keepdims=True), out=np.zeros_like(matrix), where=present[:, None])
    size = min(4 + 0.22 * n, 30)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(rows, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    axis.set_xticks(range(n), species, rotation=90, fontsize=max(4, 9 - n // 20))
    axis.set_yticks(range(n), species, fontsize=max(4, 9 - n // 20))
    axis.set_xlabel("predicted")
    axis.set_ylabel("actual")
    axis.set_title(title)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="share of the actual species")
    _save(figure, target)


def f1_vs_count_png(rows: list[dict[str, Any]], target: str | Path, rare_threshold: int, title: str) -> None:
    """Per-species F1 against training recordings (log scale), rare threshold marked."""
    shown = [r for r in rows if r["support"] > 0]
    counts = np.array([r["train_count"] for r in shown], dtype=float)
    f1 = np.array([r["f1"] for r in shown])
    figure, axis = plt.subplots(figsize=(8, 5))
    axis.scatter(counts, f1, s=28, alpha=0.8)
    for row, x, y in zip(shown, counts, f1, strict=True):
        if len(shown) <= 40:
            axis.annotate(row["species"], (x, y), fontsize=6, alpha=0.7, xytext=(3, 2), textcoords="offset points")
    axis.axvline(rare_threshold, color="grey", linestyle="--", linewidth=1)
    axis.text(rare_threshold, 1.02, f" rare < {rare_threshold}", fontsize=8, color="grey")
    axis.set_xscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")  # 3, 10, 100 rather than 3x10^0
    axis.xaxis.set_major_formatter(plain)
    axis.xaxis.set_minor_formatter(plain if counts.size and counts.max() / max(counts.min(), 1) < 20 else "")
    axis.set_ylim(-0.03, 1.08)
    axis.set_xlabel("training recordings of the species")
    axis.set_ylabel("test F1")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    _save(figure, target)


def training_curves_png(history: list[dict[str, float]], target: str | Path) -> None:
    """Loss, accuracy/F1 and learning rate per epoch."""
    epochs = [h["epoch"] for h in history]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key in ("train/loss", "val/loss"):
        axes[0].plot(epochs, [h.get(key, np.nan) for h in history], label=key, marker=".")
    for key in ("train/accuracy", "val/accuracy", "val/f1_macro"):
        axes[1].plot(epochs, [h.get(key, np.nan) for h in history], label=key, marker=".")
    axes[2].plot(epochs, [h.get("train/lr", np.nan) for h in history], label="lr (head)", marker=".")
    if any("train/backbone_lr" in h for h in history):
        axes[2].plot(epochs, [h.get("train/backbone_lr", np.nan) for h in history], label="lr (backbone)")
    for axis, title in zip(axes, ("loss", "accuracy / F1-macro", "learning rate"), strict=True):
        axis.set_xlabel("epoch")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend()
    _save(figure, target)


def bar_png(labels: list[str], values: list[float] | dict[str, list[float | None]], target: str | Path, title: str,
            xlabel: str) -> None:  # fmt: skip
    """Horizontal bars; ``values`` as a dict draws one bar per series and label (None leaves a gap)."""
    series = values if isinstance(values, dict) else {"": values}
    height = 0.8 / len(series)
    figure, axis = plt.subplots(figsize=(8, 0.6 + 0.3 * len(labels) * len(series)))
    positions = np.arange(len(labels))
    for number, (name, numbers) in enumerate(series.items()):
        shown = [np.nan if v is None else v for v in numbers]
        axis.barh(positions + (number - (len(series) - 1) / 2) * height, shown, height, label=name or None)
    axis.set_yticks(positions, labels)
    axis.invert_yaxis()
    if len(series) > 1:  # beside the bars, where it can hide none of them
        axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    axis.set_xlabel(xlabel)
    axis.set_title(title)
    axis.grid(alpha=0.3, axis="x")
    _save(figure, target)


def soundscape_png(curves: Any, per_species: Any, target: str | Path) -> None:
    """Soundscape test segments: precision-recall curves (each species thin, micro-averaged bold, BirdNET zero-shot
    dashed) and per-species AP of the model against BirdNET zero-shot. Without soundscapes, a note saying so."""
    if curves is None or len(curves) == 0:
        figure, axis = plt.subplots(figsize=(6, 2))
        axis.axis("off")
        axis.text(0.5, 0.5, "no soundscapes (soundscapes.source: none)", ha="center", va="center")
        _save(figure, target)
        return
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, max(4.5, 0.22 * len(per_species) + 1.5)))
    model = curves[curves["model"] == "model"]
    for name, rows in model.groupby("curve", sort=False):
        if name != "micro":
            left.plot(rows["recall"], rows["precision"], color="tab:blue", alpha=0.25, lw=0.8)
    micro = model[model["curve"] == "micro"]
    left.plot(micro["recall"], micro["precision"], color="tab:blue", lw=2.2, label="model, micro-averaged")
    birdnet = curves[(curves["model"] == "birdnet_zero_shot") & (curves["curve"] == "micro")]
    if len(birdnet):
        left.plot(birdnet["recall"], birdnet["precision"], "--", color="tab:orange", lw=2,
                  label="BirdNET zero-shot, micro-averaged")  # fmt: skip
    left.set_xlim(0, 1)
    left.set_ylim(0, 1.02)
    left.set_xlabel("recall")
    left.set_ylabel("precision")
    left.set_title("test soundscapes, 5 s segments (thin: each species)")
    left.legend(loc="lower left")
    table = per_species.dropna(subset=["ap"]).sort_values("ap")
    y = np.arange(len(table))
    right.barh(y - 0.2, table["ap"], height=0.4, color="tab:blue", label="model")
    if "birdnet_ap" in table.columns:
        right.barh(y + 0.2, table["birdnet_ap"].fillna(0.0), height=0.4, color="tab:orange", label="BirdNET zero-shot")
    right.set_yticks(y, table["species"], fontsize=7)
    right.set_xlim(0, 1)
    right.set_xlabel("average precision (test segments)")
    right.legend(loc="lower right")
    _save(figure, target)
