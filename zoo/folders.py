"""Your own images as a data set: a folder of class sub-folders, decoded once and cached as uint8 tensors."""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.errors import DataWarning, ZooError
from zoo.files import atomic_path
from zoo.registry import Dataset, format_shape

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["CACHE_DIR_ENV", "find_dataset", "folder_dataset"]

CACHE_DIR_ENV = "ZOO_CACHE_DIR"
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
TEST_FRACTION = 0.2  # of a single folder, held out as the test split


@dataclass(frozen=True)
class _Layout:
    classes: tuple[str, ...]
    files: dict[str, list[tuple[Path, int]]]
    """Per split, (file, label) pairs."""


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())


def _layout(root: Path) -> _Layout:
    """``root/train/<class>`` and ``root/test/<class>``, or ``root/<class>`` with a fifth of the images as test."""
    split_dirs = {s: root / s for s in ("train", "test")}
    if all(d.is_dir() for d in split_dirs.values()):
        classes = tuple(sorted(d.name for d in split_dirs["train"].iterdir() if d.is_dir()))
        files = {s: [(p, i) for i, c in enumerate(classes) for p in _images(d / c)] for s, d in split_dirs.items()}
    else:
        classes = tuple(sorted(d.name for d in root.iterdir() if d.is_dir()))
        pairs = [(p, i) for i, c in enumerate(classes) for p in _images(root / c)]
        # A stable hash of each file's name picks the test images: adding files does not reshuffle the others.
        test = {p for p, _ in pairs if int(hashlib.sha1(p.name.encode()).hexdigest(), 16) % 100 < TEST_FRACTION * 100}
        files = {"train": [x for x in pairs if x[0] not in test], "test": [x for x in pairs if x[0] in test]}
    if len(classes) < 2 or not files["train"]:
        raise ZooError(
            f"{root} has {len(classes)} class folder(s) with images; put images in {root}/<class>/*.png "
            f"(at least two classes), or in {root}/train/<class>/ and {root}/test/<class>/"
        )
    return _Layout(classes, files)


def _cache_dir() -> Path:
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    import platformdirs

    return platformdirs.user_cache_path("zoo") / "folders"


def _decode(
    files: list[tuple[Path, int]], size: tuple[int, int] | None, grey: bool
) -> tuple[list[np.ndarray], list[int], list[str]]:
    """Each readable image as an H×W(×3) uint8 array, its label, and "name: reason" for each unreadable one."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    arrays: list[np.ndarray] = []
    labels: list[int] = []
    skipped: list[str] = []
    for path, label in files:
        try:
            with Image.open(path) as file:
                img = file.convert("L" if grey else "RGB")
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            arrays.append(np.asarray(img, dtype=np.uint8))
            labels.append(label)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            skipped.append(f"{path.name}: {exc}")
    return arrays, labels, skipped


def _load(root: Path, layout: _Layout, split: str, image_size: int | None, grayscale: bool | None,
          ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """One split as tensors, from the cache when no file under ``root`` changed since it was written."""
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    files = layout.files[split]
    grey = grayscale if grayscale is not None else _mostly_grey(layout.files["train"])
    stamp = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p, _ in files]
    key = hashlib.sha256(json.dumps([str(root), split, image_size, grey, stamp]).encode()).hexdigest()[:32]
    cached = _cache_dir() / f"{key}.safetensors"
    if cached.is_file():
        tensors = load_file(str(cached))
        return tensors["images"], tensors["labels"]

    size = (image_size, image_size) if image_size else None
    arrays, labels, skipped = _decode(files, size, grey)
    if skipped:
        warnings.warn(f"{len(skipped)} of {len(files)} images in {root} ({split}) could not be read and were skipped "
                      f"(first: {skipped[0]})", DataWarning, stacklevel=3)  # fmt: skip
    sizes = Counter(a.shape[:2] for a in arrays)
    if len(sizes) > 1:
        listing = ", ".join(f"{h}x{w}: {n}" for (h, w), n in sizes.most_common(3))
        raise ZooError(f"images in {root} come in {len(sizes)} sizes ({listing}); pass --image-size N to resize them")
    if not arrays:
        raise ZooError(f"no readable images for the {split} split in {root}")
    stacked = np.stack(arrays)
    images = torch.from_numpy(stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2).copy())
    result = images.contiguous(), torch.tensor(labels, dtype=torch.int64)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cached) as tmp:
            save_file({"images": result[0], "labels": result[1]}, str(tmp))
    except OSError:
        pass  # a cache that cannot be written only costs the next run its decoding time
    return result


def _mostly_grey(files: list[tuple[Path, int]]) -> bool:
    """Grey when the first images are stored as greyscale files (mode L, LA, 1 or I), colour otherwise."""
    from PIL import Image

    modes = []
    for path, _ in files[:8]:
        try:
            with Image.open(path) as img:
                modes.append(img.mode)
        except OSError:
            continue
    return bool(modes) and all(m in ("L", "LA", "1", "I", "I;16") for m in modes)


def find_dataset(name: str, image_size: int | None = None, grayscale: bool | None = None) -> Dataset:
    """A folder of images by its path, or a registered data set by name: what every command accepts."""
    if Path(name).expanduser().is_dir():
        return folder_dataset(name, image_size, grayscale)
    from zoo.loader import get_registry

    return get_registry().dataset(name)


def folder_dataset(path: str | Path, image_size: int | None = None, grayscale: bool | None = None) -> Dataset:
    """A Dataset for a folder of images; its normalisation is computed from its training split."""
    root = Path(path).expanduser().resolve()
    layout = _layout(root)
    images, _ = _load(root, layout, "train", image_size, grayscale)
    pixels = images.float().div(255).transpose(0, 1).reshape(images.shape[1], -1)
    mean = tuple(round(float(v), 4) for v in pixels.mean(1))
    std = tuple(max(round(float(v), 4), 1e-3) for v in pixels.std(1))
    name = "folder_" + (re.sub(r"[^a-z0-9]+", "_", root.name.lower()).strip("_") or "images")

    def loader(split: str, data_root: Path, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
        return _load(root, layout, split, image_size, grayscale)

    shape = (images.shape[1], images.shape[2], images.shape[3])
    return Dataset(
        name=name if re.fullmatch(r"[a-z][a-z0-9_]*", name) else "folder_images",
        loader=loader,
        summary=f"images in {root} ({format_shape(shape)})",
        classes=layout.classes,
        shape=shape,
        mean=mean,
        std=std,
        train_size=len(layout.files["train"]),
        test_size=len(layout.files["test"]),
        source=str(root),
        location=str(root),
        downloads=False,
    )
