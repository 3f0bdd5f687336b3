"""Built-in plugin: MNIST, FashionMNIST and CIFAR-10 through torchvision, and seven-segment digits drawn on the fly."""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import zoo
from zoo import Dataset
from zoo.errors import DatasetNotFound

if TYPE_CHECKING:
    from torch import Tensor

DIGITS = tuple("0123456789")
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_PNG = "CIFAR-10-dataset"
"""CIFAR-10 as PNG files in train/<class>/ and test/<class>/, as in a clone of github.com/cyizhuo/CIFAR-10-dataset."""


def _expected_files(cls: type, root: Path) -> str:
    """Where torchvision looks for a data set's files, for the error message."""
    if hasattr(cls, "resources"):  # MNIST and FashionMNIST: raw IDX files, optionally gzipped
        names = ", ".join(os.path.splitext(os.path.basename(url))[0] for url, _ in cls.resources)
        return f"{names} in {root / cls.__name__ / 'raw'}"
    return (
        f"{cls.filename} in {root}, or its contents in {root / cls.base_folder}, "  # type: ignore[attr-defined]
        f"or the PNG files in {root / CIFAR10_PNG}/train/<class>/ and test/<class>/"
    )


def _damaged_idx_file(cls: type, root: Path) -> Path | None:
    """An MNIST-style raw IDX file that is present but whose size does not match its header, if there is one."""
    for url, _ in getattr(cls, "resources", []):
        path: Path = root / cls.__name__ / "raw" / os.path.splitext(os.path.basename(url))[0]
        if not path.is_file():
            continue
        with path.open("rb") as f:
            header = f.read(4)
            ndim = header[3] if len(header) == 4 and header[:2] == b"\0\0" else 0
            dims = f.read(4 * ndim)
        expected = 4 + 4 * ndim + (math.prod(struct.unpack(f">{ndim}I", dims)) if len(dims) == 4 * ndim else -1)
        if ndim == 0 or path.stat().st_size != expected:
            return path
    return None


def _torchvision(class_name: str, split: str, root: Path, download: bool) -> tuple[Tensor, Tensor]:
    import torch
    from torchvision import datasets

    cls = getattr(datasets, class_name)
    try:
        # torchvision prints download attempts to stdout; keep stdout for zoo's own output.
        with contextlib.redirect_stdout(io.StringIO()):
            ds = cls(root=str(root), train=split == "train", download=download)
    except Exception as exc:
        cause = " ".join(str(exc).split()) or type(exc).__name__
        damaged = _damaged_idx_file(cls, root)
        if damaged:
            raise zoo.ZooError(
                f"{damaged} is corrupt or truncated ({cause}); delete it to download it again, or put a good copy there"
            ) from exc
        problem = f"could not be downloaded ({cause})" if download else "is not downloaded"
        raise DatasetNotFound(
            f"{class_name} {problem}: put {_expected_files(cls, root)}, "
            f"or pass --data-dir DIR (or set $ZOO_DATA_DIR) naming the directory that holds them"
        ) from exc
    images = torch.as_tensor(ds.data)
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2).contiguous()  # to N×C×H×W
    return images, torch.as_tensor(ds.targets, dtype=torch.int64)


def _cifar10(split: str, root: Path, download: bool) -> tuple[Tensor, Tensor]:
    """torchvision's CIFAR-10 files when they are there; else its PNG class folders; else torchvision's download."""
    folder = root / CIFAR10_PNG
    if (root / "cifar-10-batches-py").is_dir() or not (folder / split).is_dir():
        return _torchvision("CIFAR10", split, root, download)
    from zoo.folders import load_split

    classes, images, labels = load_split(folder, split, grayscale=False)
    if classes != CIFAR10 or images.shape[1:] != (3, 32, 32):
        shape = "x".join(map(str, images.shape[1:]))
        raise zoo.ZooError(
            f"{folder} is not CIFAR-10: it has classes {', '.join(classes)} of {shape} images; "
            f"expected {', '.join(CIFAR10)} of 3x32x32"
        )
    return images, labels


@functools.lru_cache(maxsize=4)
def _sevenseg(size: int, channels: int, split: str) -> tuple[Tensor, Tensor]:
    from .sevenseg import generate

    n, seed = (10_000, 0) if split == "train" else (2_000, 1)
    return generate(n, size, channels, seed)


def _sevenseg_loader(size: int, channels: int) -> Callable[[str, Path, bool], tuple[Tensor, Tensor]]:
    def load(split: str, root: Path, download: bool) -> tuple[Tensor, Tensor]:
        images, labels = _sevenseg(size, channels, split)
        return images.clone(), labels.clone()  # callers may modify their copy

    return load


@zoo.hookimpl
def register_datasets(register: Callable[[Dataset], None]) -> None:
    tv = "https://pytorch.org/vision/stable/datasets.html"
    register(
        Dataset(
            name="mnist",
            loader=functools.partial(_torchvision, "MNIST"),
            summary="handwritten digits",
            classes=DIGITS,
            shape=(1, 28, 28),
            mean=(0.1307,),
            std=(0.3081,),
            train_size=60_000,
            test_size=10_000,
            source=tv,
        )
    )
    register(
        Dataset(
            name="fashionmnist",
            aliases=("fashion_mnist", "fmnist"),
            loader=functools.partial(_torchvision, "FashionMNIST"),
            summary="Zalando clothing images",
            classes=FASHION,
            shape=(1, 28, 28),
            mean=(0.2860,),
            std=(0.3530,),
            train_size=60_000,
            test_size=10_000,
            source=tv,
        )
    )
    register(
        Dataset(
            name="cifar10",
            aliases=("cifar_10",),
            loader=_cifar10,
            summary="small colour photos of ten object classes",
            classes=CIFAR10,
            shape=(3, 32, 32),
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616),
            train_size=50_000,
            test_size=10_000,
            source=tv,
        )
    )
    register(
        Dataset(
            name="sevenseg",
            loader=_sevenseg_loader(28, 1),
            summary="seven-segment digits drawn on the fly (no download)",
            classes=DIGITS,
            shape=(1, 28, 28),
            mean=(0.1002,),
            std=(0.2154,),
            train_size=10_000,
            test_size=2_000,
            downloads=False,
            source="plugins/sevenseg.py",
        )
    )
    register(
        Dataset(
            name="sevenseg_rgb",
            loader=_sevenseg_loader(32, 3),
            summary="seven-segment digits in colour, drawn on the fly (no download)",
            classes=DIGITS,
            shape=(3, 32, 32),
            mean=(0.4990, 0.4986, 0.5039),
            std=(0.2945, 0.2976, 0.2965),
            train_size=10_000,
            test_size=2_000,
            downloads=False,
            source="plugins/sevenseg.py",
        )
    )
