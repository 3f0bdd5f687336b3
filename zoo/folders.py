"""Your own images as a data set: a folder of class sub-folders, decoded once and cached as uint8 tensors.

Hidden files and folders are left out, links that lead out of the folder are skipped, and a corrupt cache entry is
decoded again: a folder's contents are untrusted input.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from zoo.errors import DataWarning, SettingError, ZooError
from zoo.files import CACHE_DIR_ENV, atomic_path, cache_root
from zoo.images import GREY_MODES, decode, image_mode
from zoo.loader import get_registry
from zoo.registry import Dataset, format_shape

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["CACHE_DIR_ENV", "MAX_IMAGE_SIZE", "find_dataset", "folder_dataset", "load_split"]

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
TEST_FRACTION = 0.2  # of a single folder, held out as the test split
CACHE_FORMAT = 2  # part of each cache entry's key: raised when decoding changes, so older entries are not reused


@dataclass(frozen=True)
class _Layout:
    classes: tuple[str, ...]
    files: dict[str, list[tuple[Path, int]]]
    """Per split, (file, label) pairs."""


def _visible(folder: Path) -> list[os.DirEntry[str]]:
    """The entries of ``folder`` by name, without hidden ones (``.ipynb_checkpoints``, ``.DS_Store``, ``.git``).

    Directory entries know whether they are folders, files or links from the listing itself: no call to the
    file system per file (60,000 images otherwise cost seconds of stat calls).
    """
    try:
        with os.scandir(folder) as entries:
            return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError:
        return []  # a folder that cannot be listed holds no images zoo can read


def _is(entry: os.DirEntry[str], kind: Literal["dir", "file"]) -> bool:
    """Whether ``entry`` is, or links to, a folder or a file; a link in a loop leads nowhere, as a broken one does
    (``DirEntry`` raises for the one and not for the other)."""
    try:
        return entry.is_dir() if kind == "dir" else entry.is_file()
    except OSError:
        return False


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path``, its links followed, lies in ``root`` (a resolved path)."""
    return path.resolve().is_relative_to(root)


def _images(folder: Path, root: Path, outside: list[Path]) -> list[Path]:
    """The image files below ``folder``; those, and folders, that a link takes outside ``root`` go to ``outside``."""
    found: list[Path] = []
    seen: set[Path] = set()
    stack = [folder]
    while stack:
        current = stack.pop()
        real = current.resolve()
        if real in seen:
            continue  # a link back up the tree would otherwise be followed forever
        seen.add(real)
        for entry in _visible(current):
            is_dir = _is(entry, "dir")
            if not is_dir and not (os.path.splitext(entry.name)[1].lower() in SUFFIXES and _is(entry, "file")):
                continue
            path = Path(entry.path)
            # Only a link can lead out of a folder already known to be inside root: resolve just those.
            if entry.is_symlink() and not _inside(path, root):
                outside.append(path)
            elif is_dir:
                stack.append(path)
            else:
                found.append(path)
    return sorted(found)


def _scan(folder: Path, root: Path, split: str) -> dict[str, list[Path]]:
    """Per class folder of ``folder``, its image files; links that leave ``root`` are skipped with one warning."""
    classes: dict[str, list[Path]] = {}
    outside: list[Path] = []
    for entry in _visible(folder):
        if not _is(entry, "dir"):
            continue
        path = Path(entry.path)
        if _inside(path, root):
            classes[entry.name] = _images(path, root, outside)
        else:
            outside.append(path)
    if outside:
        where = f" ({split})" if split else ""
        warnings.warn(
            f"{len(outside)} link(s) in {root}{where} lead outside it and were skipped (first: "
            f"{outside[0].relative_to(root)}); copy the files they point to into the folder to use them",
            DataWarning,
            stacklevel=4,
        )
    return classes


def _layout(root: Path) -> _Layout:
    """``root/train/<class>`` and ``root/test/<class>``, or ``root/<class>`` with a fifth of the images as test.

    Hidden files and folders are left out, and so are links to files or folders outside ``root``.
    """
    split_dirs = {s: root / s for s in ("train", "test")}
    if all(d.is_dir() for d in split_dirs.values()):
        scans = {s: _scan(d, root, s) for s, d in split_dirs.items()}
        classes = tuple(scans["train"])
        files = {s: [(p, i) for i, c in enumerate(classes) for p in scan.get(c, [])] for s, scan in scans.items()}
    else:
        scan = _scan(root, root, "")
        classes = tuple(scan)
        pairs = [(p, i) for i, c in enumerate(classes) for p in scan[c]]
        # A stable hash of each file's name picks the test images: adding files does not reshuffle the others.
        test = {p for p, _ in pairs if int(hashlib.sha1(p.name.encode()).hexdigest(), 16) % 100 < TEST_FRACTION * 100}
        files = {"train": [x for x in pairs if x[0] not in test], "test": [x for x in pairs if x[0] in test]}
    trained = {label for _, label in files["train"]}
    if len(trained) < 2:
        empty = [c for i, c in enumerate(classes) if i not in trained]
        without = f" ({', '.join(empty[:5])}{' …' if len(empty) > 5 else ''} without any)" if empty else ""
        raise ZooError(
            f"{root} has {len(trained)} class folder(s) with training images{without}; put images in "
            f"{root}/<class>/*.png (at least two classes), or in {root}/train/<class>/ and {root}/test/<class>/"
        )
    return _Layout(classes, files)


def _cache_dir() -> Path:
    return cache_root() / "folders"


def _decode(
    files: list[tuple[Path, int]], size: tuple[int, int] | None, grey: bool
) -> tuple[list[np.ndarray], list[int], list[str]]:
    """Each readable image as an H×W(×3) uint8 array, its label, and why each unreadable one could not be read."""
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    skipped: list[str] = []
    for path, label in files:
        try:
            arrays.append(decode(path, size, grey))
        except ZooError as exc:
            skipped.append(str(exc))
            continue
        labels.append(label)
    return arrays, labels, skipped


def _cached(
    path: Path,
    files: int,
    classes: int,
    channels: int,
    image_size: int | None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A cache entry's images and labels, or None when it cannot be read or does not hold what zoo writes."""
    import torch
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception:  # whatever makes a cache entry unreadable (truncated, garbage), it is only a cache
        return None
    images, labels = tensors.get("images"), tensors.get("labels")
    if set(tensors) != {"images", "labels"} or images is None or labels is None:
        return None
    n = len(labels) if labels.ndim == 1 else -1
    sized = image_size is None or tuple(images.shape[2:]) == (image_size, image_size)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[:2] != (n, channels) or not sized:
        return None
    if labels.dtype != torch.int64 or not 0 < n <= files or int(labels.min()) < 0 or int(labels.max()) >= classes:
        return None
    return images, labels


def _write_cache(path: Path, images: torch.Tensor, labels: torch.Tensor) -> bool:
    """Whether the tensors could be written to the cache entry ``path``."""
    from safetensors.torch import save_file

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({"images": images, "labels": labels}, str(tmp))
    except (OSError, ZooError):  # a full disk, say: a cache that cannot be written only costs decoding time
        return False
    return True


def _load(
    root: Path,
    layout: _Layout,
    split: str,
    image_size: int | None,
    grayscale: bool | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One split as tensors, from the cache when no file under ``root`` changed since it was written."""
    import numpy as np
    import torch

    files = layout.files[split]
    grey = grayscale if grayscale is not None else _mostly_grey(layout.files["train"])
    stamp = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p, _ in files]
    key = hashlib.sha256(json.dumps([CACHE_FORMAT, str(root), split, image_size, grey, stamp]).encode()).hexdigest()
    cached = _cache_dir() / f"{key[:32]}.safetensors"
    corrupt = cached.is_file()
    if corrupt:
        tensors = _cached(cached, len(files), len(layout.classes), 1 if grey else 3, image_size)
        if tensors is not None:
            return tensors

    size = (image_size, image_size) if image_size else None
    arrays, labels, skipped = _decode(files, size, grey)
    if skipped:
        warnings.warn(
            f"{len(skipped)} of {len(files)} images in {root} ({split}) could not be read and were skipped "
            f"(first: {skipped[0]})",
            DataWarning,
            stacklevel=3,
        )
    sizes = Counter(a.shape[:2] for a in arrays)
    if len(sizes) > 1:
        listing = ", ".join(f"{h}x{w}: {n}" for (h, w), n in sizes.most_common(3))
        raise ZooError(f"images in {root} come in {len(sizes)} sizes ({listing}); pass --image-size N to resize them")
    if not arrays:
        raise ZooError(f"no readable images for the {split} split in {root}")
    stacked = np.stack(arrays)
    images = torch.from_numpy(stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2).copy())
    result = images.contiguous(), torch.tensor(labels, dtype=torch.int64)
    written = _write_cache(cached, *result)
    if corrupt:
        outcome = "has been rewritten" if written else "could not be rewritten; delete it"
        warnings.warn(
            f"the cache entry {cached} for {root} ({split}) was corrupt and {outcome}", DataWarning, stacklevel=3
        )
    return result


def _mostly_grey(files: list[tuple[Path, int]]) -> bool:
    """Grey when the first images are stored as greyscale files (mode L, LA, 1, I, I;16 or F), colour otherwise."""
    modes = []
    for path, _ in files[:8]:
        try:
            modes.append(image_mode(path))
        except ZooError:
            continue
    return bool(modes) and all(m in GREY_MODES for m in modes)


def load_split(
    root: Path,
    split: str,
    grayscale: bool | None = None,
) -> tuple[tuple[str, ...], torch.Tensor, torch.Tensor]:
    """One split of ``root/train/<class>`` and ``root/test/<class>``: its class names, images and labels (cached)."""
    root = root.resolve()
    layout = _layout(root)
    images, labels = _load(root, layout, split, None, grayscale)
    return layout.classes, images, labels


def find_dataset(name: str, image_size: int | None = None, grayscale: bool | None = None) -> Dataset:
    """A folder of images by its path, or a registered data set by name: what every command accepts."""
    if Path(name).expanduser().is_dir():
        return folder_dataset(name, image_size, grayscale)
    dataset = get_registry().dataset(name)
    given = [s for s, v in (("image_size", image_size), ("grayscale", grayscale)) if v is not None]
    if given:  # a registered data set comes as it is: silently training on other images than asked would mislead
        raise SettingError(given[0], f"applies to folders of images; {dataset.name}'s images are "
                                     f"{format_shape(dataset.shape)} as registered, and architectures adapt to "
                                     f"them: leave it out")  # fmt: skip
    return dataset


def dataset_for_model(name: str, shape: tuple[int, ...]) -> Dataset:
    """The data set ``name`` to run a model taking ``shape`` (C, H, W) on: a folder read at that size and colour,
    or a registered data set as it is."""
    if Path(name).expanduser().is_dir():
        return folder_dataset(name, shape[1], shape[0] == 1)
    return get_registry().dataset(name)


MAX_IMAGE_SIZE = 1024
"""The largest side a folder's images are resized to: a model's input is at most 4M values (zoo.card)."""


def folder_dataset(path: str | Path, image_size: int | None = None, grayscale: bool | None = None) -> Dataset:
    """A Dataset for a folder of images; its normalisation is computed from its training split."""
    if image_size is not None and not 1 <= image_size <= MAX_IMAGE_SIZE:
        raise SettingError("image_size", f"must be from 1 to {MAX_IMAGE_SIZE}, got {image_size}")
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
