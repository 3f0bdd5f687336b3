"""Data on disk and in memory: the data directory, splits held as uint8 tensors, and batches made from them."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.errors import ZooError

if TYPE_CHECKING:
    import torch

    from zoo.registry import Dataset

__all__ = ["DATA_DIR_ENV", "Normalizer", "Split", "Splits", "augment", "batches", "load_splits", "resolve_data_dir"]

DATA_DIR_ENV = "ZOO_DATA_DIR"


def resolve_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``explicit`` (``--data-dir``), else ``$ZOO_DATA_DIR``, else a per-user cache directory.

    A directory the user names must exist; the default one is created on demand.
    """
    for given, origin in ((explicit, "--data-dir"), (os.environ.get(DATA_DIR_ENV), f"${DATA_DIR_ENV}")):
        if given:
            path = Path(given).expanduser()
            if not path.is_dir():
                raise ZooError(f"data directory {str(path)!r} ({origin}) does not exist; create it or give another")
            return path
    import platformdirs

    return platformdirs.user_cache_path("zoo") / "data"


@dataclass
class Split:
    """Images as uint8 N×C×H×W and their int64 labels, held in memory."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split


def load_splits(dataset: Dataset, root: Path, val_split: float, seed: int, limit: int | None = None) -> Splits:
    """The train split divided into train and validation by a seeded shuffle, and the test split.

    ``limit`` keeps that many training images (a random subset), for smoke runs and small-data recipes.
    """
    import torch

    images, labels = dataset.load("train", root)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_val = round(len(labels) * val_split)
    val, train = order[:n_val], order[n_val:]
    if limit:
        train = train[:limit]
    test_images, test_labels = dataset.load("test", root)
    return Splits(
        train=Split(images[train], labels[train]),
        val=Split(images[val], labels[val]),
        test=Split(test_images, test_labels),
    )


class Normalizer:
    """Turns uint8 batches into normalised float batches on the model's device, in one fused step."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device, channels_last: bool):
        import torch

        std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.scale = 1 / (255 * std_t)
        self.shift = torch.tensor(mean, device=device).view(1, -1, 1, 1) / std_t
        self.device = device
        self.mean_pixel = tuple(round(255 * m) for m in mean)
        """The mean as uint8 pixel values: what an erased region is filled with (0 once normalised)."""
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True).float()
        return (x * self.scale - self.shift).contiguous(memory_format=self.memory_format)


def batches(
    split: Split, batch_size: int, order: torch.Tensor | None = None, start: int = 0, drop_last: bool = False
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield uint8 image and label batches in ``order`` (default: as stored), from batch number ``start`` on."""
    n = len(split)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for lo in range(start * batch_size, stop, batch_size):
        if order is None:
            yield split.images[lo : lo + batch_size], split.labels[lo : lo + batch_size]
        else:
            index = order[lo : lo + batch_size]
            yield split.images[index], split.labels[index]


AFFINE_DEGREES, AFFINE_TRANSLATE, AFFINE_SCALE, AFFINE_SHEAR = 10.0, 0.1, (0.9, 1.1), 10.0
"""The ranges of ``affine``: torchvision's RandomAffine(10, (0.1, 0.1), (0.9, 1.1), 10), as digit recipes use it."""
ERASE_P, ERASE_AREA, ERASE_RATIO = 0.5, (0.02, 0.33), (0.3, 3.3)
"""The draws of ``erase``: torchvision's RandomErasing defaults."""


def affine(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each uint8 image of the batch rotated, shifted, scaled and sheared at random within ``AFFINE_*`` (bilinear,
    zeros beyond the border), in one ``grid_sample`` call for the whole batch."""
    import torch
    from torch.nn import functional

    b, _, h, w = images.shape
    u = torch.rand(b, 5, generator=generator) * 2 - 1  # uniform in [-1, 1]
    angle, shear = u[:, 0] * math.radians(AFFINE_DEGREES), u[:, 1] * math.radians(AFFINE_SHEAR)
    low, high = AFFINE_SCALE
    scale = low + (u[:, 2] + 1) / 2 * (high - low)
    cos, sin, tan = angle.cos(), angle.sin(), shear.tan()
    # The image's own transform (rotation, then shear along x, then scale); the grid samples through its inverse.
    forward = torch.stack([torch.stack([cos, cos * tan - sin], 1), torch.stack([sin, sin * tan + cos], 1)], 1)
    forward = forward * scale[:, None, None]
    inverse = torch.linalg.inv(forward)
    shift = u[:, 3:5] * 2 * AFFINE_TRANSLATE  # grid coordinates span 2 per image side
    theta = torch.cat([inverse, -(inverse @ shift[:, :, None])], 2)
    grid = functional.affine_grid(theta, [b, images.shape[1], h, w], align_corners=False)
    moved = functional.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return moved.round_().clamp_(0, 255).to(torch.uint8)


def erase(images: torch.Tensor, fill: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """With probability ``ERASE_P`` per image, a rectangle of a random area and aspect ratio (``ERASE_*``) at a
    random place set to ``fill`` (the mean pixel), as torchvision's RandomErasing; the whole batch at once."""
    import torch

    b, c, h, w = images.shape
    u = torch.rand(b, 5, generator=generator)
    (a_low, a_high), (r_low, r_high) = ERASE_AREA, ERASE_RATIO
    area = (a_low + u[:, 0] * (a_high - a_low)) * h * w
    ratio = torch.exp(math.log(r_low) + u[:, 1] * (math.log(r_high) - math.log(r_low)))
    eh = (area * ratio).sqrt().round().clamp(1, h).long()
    ew = (area / ratio).sqrt().round().clamp(1, w).long()
    top = (u[:, 2] * (h - eh + 1)).long()
    left = (u[:, 3] * (w - ew + 1)).long()
    rows, cols = torch.arange(h), torch.arange(w)
    inside = ((rows >= top[:, None]) & (rows < (top + eh)[:, None]))[:, :, None] & (
        (cols >= left[:, None]) & (cols < (left + ew)[:, None])
    )[:, None, :]
    chosen = (u[:, 4] < ERASE_P)[:, None, None] & inside
    value = torch.tensor(fill, dtype=torch.uint8).view(1, c, 1, 1)
    return torch.where(chosen[:, None], value, images)


def augment(images: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crops after zero padding by ``pad`` pixels and, if ``flip``, random mirroring; the whole batch at once."""
    import torch

    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b, 1), generator=generator)
    rows = (dy + torch.arange(h))[:, None, :, None]  # B×1×H×1
    cols = dx + torch.arange(w)
    if flip:
        mirrored = torch.rand(b, generator=generator) < 0.5
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    cols = cols[:, None, None, :]  # B×1×1×W
    batch = torch.arange(b)[:, None, None, None]
    channel = torch.arange(images.shape[1])[None, :, None, None]
    return padded[batch, channel, rows, cols]
