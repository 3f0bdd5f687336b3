"""The pictures a notebook would show: learning curves, the confusion matrix, misclassified images, and speeds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from zoo.files import atomic_path

__all__ = ["confusion", "curves", "misses", "speeds"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed, or wanted
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)


def curves(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Loss and accuracy per epoch, train against validation."""
    plt = _pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = [h["epoch"] for h in history]
    for split in ("train", "val"):
        if all(h.get(f"{split}_loss") is not None for h in history):
            loss_ax.plot(epochs, [h[f"{split}_loss"] for h in history], marker="o", label=split)
            acc_ax.plot(epochs, [100 * h[f"{split}_acc"] for h in history], marker="o", label=split)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def confusion(matrix: torch.Tensor, classes: Sequence[str], path: Path) -> None:
    """The confusion matrix as a heat map with counts, rows the true class."""
    plt = _pyplot()
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k))
    ax.imshow(matrix.numpy(), cmap="Blues")
    top = int(matrix.max()) or 1
    for i in range(k):
        for j in range(k):
            n = int(matrix[i, j])
            ax.text(j, i, str(n), ha="center", va="center", fontsize=7, color="white" if n > top / 2 else "black")
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true")
    _save(fig, path)


def misses(
    images: torch.Tensor,
    labels: torch.Tensor,
    predictions: torch.Tensor,
    classes: Sequence[str],
    path: Path,
    limit: int = 36,
) -> None:
    """A grid of misclassified images, each titled "true → predicted"."""
    plt = _pyplot()
    wrong = (predictions != labels).nonzero().flatten()[:limit]
    cols = min(6, max(1, len(wrong)))
    rows = max(1, math.ceil(len(wrong) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong.tolist(), strict=False):
        image = images[i].permute(1, 2, 0).numpy()
        ax.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray" if image.shape[2] == 1 else None)
        ax.set_title(f"{classes[int(labels[i])]} → {classes[int(predictions[i])]}", fontsize=7)
    if not len(wrong):
        axes.flat[0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    _save(fig, path)


def speeds(
    images_per_s: Mapping[str, Sequence[tuple[int, float]]],
    rooflines: Mapping[str, float | None],
    title: str,
    path: Path,
) -> None:
    """Images/s per runtime (``{"onnx (float32)": [(batch, images/s), ...]}``) at each batch size, and each
    runtime's roofline at the largest."""
    import numpy as np

    plt = _pyplot()
    names = list(images_per_s)
    batches = [b for b, _ in images_per_s[names[0]]]
    fig, axes = plt.subplots(
        1, len(batches), figsize=(3.5 * len(batches) + 1.5, 0.4 * len(names) + 1.5), squeeze=False, sharey=True
    )
    for ax, (i, batch) in zip(axes[0], enumerate(batches), strict=True):
        y = np.arange(len(names))
        ax.barh(y, [images_per_s[n][i][1] for n in names], color="tab:blue")
        roofs = [rooflines.get(n) for n in names]
        if i == len(batches) - 1 and any(roofs):
            ax.scatter([r or np.nan for r in roofs], y, marker="|", s=200, color="tab:red", label="roofline")
            ax.legend(fontsize=8)
        ax.set_yticks(y, names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())  # the decades alone: minor labels overlap
        ax.set(xlabel="images/s", title=f"batch {batch}")
    fig.suptitle(title, fontsize=8)
    _save(fig, path)
