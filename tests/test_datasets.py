"""Data sets: torchvision's files read from a data directory, clear errors offline, and seven-segment digits."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from zoo.data import affine, erase
from zoo.data import resolve_data_dir as data_dir
from zoo.errors import DatasetNotFound, ZooError
from zoo.loader import load_registry

REGISTRY = load_registry()


def test_cifar10_reads_png_class_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The official split as PNG files in train/<class>/ and test/<class>/ (github.com/cyizhuo/CIFAR-10-dataset)."""
    import numpy as np
    from PIL import Image

    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    cifar = REGISTRY.datasets["cifar10"]
    for split, count in (("train", 2), ("test", 1)):
        for label, name in enumerate(cifar.classes):
            (tmp_path / "CIFAR-10-dataset" / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = np.full((32, 32, 3), (label * 20, i, 7), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "CIFAR-10-dataset" / split / name / f"{name}_{i}.png")
    images, labels = cifar.load("train", tmp_path, download=False)
    assert images.shape == (20, 3, 32, 32) and labels.tolist() == [i // 2 for i in range(20)]
    assert images[5, :, 0, 0].tolist() == [40, 1, 7]  # class 2 (bird), its second image, RGB kept
    assert len(cifar.load("test", tmp_path, download=False)[1]) == 10
    (tmp_path / "CIFAR-10-dataset" / "train" / "truck").rename(tmp_path / "CIFAR-10-dataset" / "train" / "lorry")
    with pytest.raises(ZooError, match=r"is not CIFAR-10: it has classes airplane, .*lorry"):
        cifar.load("train", tmp_path, download=False)


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashionmnist", "FashionMNIST")])
def test_loads_idx_files_from_the_data_directory(idx_root: Callable[[str, int], Path], name: str, folder: str) -> None:
    root = idx_root(folder, 20)
    images, labels = REGISTRY.datasets[name].load("train", root, download=False)
    assert images.shape == (20, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.tolist() == [i % 10 for i in range(20)]
    assert images[1, 0, 0, :3].tolist() == [7, 8, 9]  # pixel (i * 7 + j) % 256 as written
    test_images, _ = REGISTRY.datasets[name].load("test", root, download=False)
    assert len(test_images) == 20


@pytest.mark.parametrize(("name", "folder", "attr"), [("mnist", "MNIST", "mirrors"), ("cifar10", "CIFAR10", "url")])
def test_a_failed_download_names_the_files_and_where_they_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, folder: str, attr: str
) -> None:
    from torchvision import datasets

    # torchvision's own download code runs, against a closed local port, so this fails the same way offline or not.
    closed = "http://127.0.0.1:9/" if attr == "mirrors" else "http://127.0.0.1:9/cifar-10-python.tar.gz"
    monkeypatch.setattr(getattr(datasets, folder), attr, [closed] if attr == "mirrors" else closed)
    with pytest.raises(DatasetNotFound) as info:
        REGISTRY.datasets[name].load("train", tmp_path, download=True)
    message = str(info.value)
    assert "\n" not in message
    assert "could not be downloaded" in message and "--data-dir" in message
    expected = "train-images-idx3-ubyte" if name == "mnist" else "cifar-10-python.tar.gz"
    assert expected in message and str(tmp_path) in message


def test_missing_files_without_download(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound, match=r"is not downloaded: put .* in .*FashionMNIST/raw"):
        REGISTRY.datasets["fashionmnist"].load("test", tmp_path, download=False)


def test_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert data_dir(tmp_path) == tmp_path
    monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    with pytest.raises(ZooError, match=r"does not exist; create it"):
        data_dir(tmp_path / "nope")
    monkeypatch.setenv("ZOO_DATA_DIR", str(tmp_path / "gone"))
    with pytest.raises(ZooError, match=r"\$ZOO_DATA_DIR"):
        data_dir()


@pytest.mark.parametrize("name", ["sevenseg", "sevenseg_rgb"])
def test_generated_digits_are_deterministic_and_match_their_metadata(name: str, tmp_path: Path) -> None:
    ds = REGISTRY.datasets[name]
    images, labels = ds.load("train", tmp_path)
    again, _ = ds.load("train", tmp_path)
    test_images, _ = ds.load("test", tmp_path)
    assert images.shape == (ds.train_size, *ds.shape) and len(test_images) == ds.test_size
    assert torch.equal(images, again)
    assert not torch.equal(images[: ds.test_size], test_images), "train and test are drawn from different seeds"
    assert torch.bincount(labels, minlength=10).min() > ds.train_size / 10 * 0.8, "classes are balanced"
    pixels = images.float().div(255).transpose(0, 1).reshape(ds.shape[0], -1)
    assert pixels.mean(1).tolist() == pytest.approx(ds.mean, abs=1e-3)
    assert pixels.std(1).tolist() == pytest.approx(ds.std, abs=1e-3)


def test_loader_output_is_checked_against_the_declared_shape(tmp_path: Path) -> None:
    import dataclasses

    ds = dataclasses.replace(REGISTRY.datasets["sevenseg"], shape=(1, 32, 32))
    with pytest.raises(ZooError, match=r"expected torch.uint8 \(10000, 1, 32, 32\)"):
        ds.load("train", tmp_path)


def test_real_mnist_when_present() -> None:
    root = Path(__file__).resolve().parents[2] / "shared" / "datasets"
    if not (root / "MNIST" / "raw").is_dir():
        pytest.skip("real MNIST is not beside this checkout")
    images, labels = REGISTRY.datasets["mnist"].load("test", root, download=False)
    assert images.shape == (10_000, 1, 28, 28) and labels[:3].tolist() == [7, 2, 1]


def test_affine_moves_each_image_its_own_way_and_keeps_the_picture() -> None:
    """A bright square, rotated, shifted, scaled and sheared within the ranges: per image, reproducibly, as uint8."""
    images = torch.zeros(256, 1, 28, 28, dtype=torch.uint8)
    images[:, :, 10:18, 10:18] = 200
    moved = affine(images, torch.Generator().manual_seed(0))
    assert moved.dtype == torch.uint8 and moved.shape == images.shape
    assert torch.equal(moved, affine(images, torch.Generator().manual_seed(0))), "a function of the draw"
    changed = (moved != images).flatten(1).any(1)
    assert changed.float().mean() > 0.95, "nearly every image moves"
    assert len({bytes(m.numpy()) for m in moved}) == 256, "each its own way"
    mass = moved.flatten(1).float().sum(1) / images.flatten(1).float().sum(1)
    assert mass.min() > 0.7 and mass.max() < 1.3, "scale 0.9-1.1: the square keeps about its area"
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    weights = moved[:, 0].float()
    cy, cx = ((weights * ys).sum((1, 2)) / weights.sum((1, 2)), (weights * xs).sum((1, 2)) / weights.sum((1, 2)))
    assert ((cy - 13.5).abs().max() <= 0.1 * 28 + 1) and ((cx - 13.5).abs().max() <= 0.1 * 28 + 1), "shift ≤ 10%"


def test_erase_fills_a_rectangle_with_the_mean_in_about_half_the_images() -> None:
    images = torch.full((1000, 3, 32, 32), 7, dtype=torch.uint8)
    erased = erase(images, (125, 123, 114), torch.Generator().manual_seed(0))
    touched = (erased != images).flatten(1).any(1)
    assert 430 < int(touched.sum()) < 570, "p = 0.5"
    for image in erased[touched][:50]:
        region = (image != 7).all(0)
        rows, cols = region.any(1).nonzero(), region.any(0).nonzero()
        height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert int(region.sum()) == height * width, "one rectangle"
        assert 0.015 * 1024 <= height * width <= 0.34 * 1024
        assert image[:, region].T.tolist() == [[125, 123, 114]] * int(region.sum()), "filled with the mean pixel"
    assert torch.equal(erased[~touched], images[~touched]), "the others are left as they were"
