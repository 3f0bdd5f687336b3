"""Image files are untrusted input: bounded decoding, one decoder for predict and folders, every failure per file."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageFile

from zoo import checkpoint
from zoo.card import new_card
from zoo.cli import cli
from zoo.errors import DataWarning, ZooError
from zoo.folders import folder_dataset
from zoo.images import MAX_PIXELS, decode, read_image
from zoo.loader import get_registry


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))


def write_bomb(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A real PNG decompression bomb: black 1-bit rows compressed one by one, so writing it needs no large array."""
    row = bytes(1 + (width + 7) // 8)  # filter type 0, then black pixels
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale, no interlacing
    chunks = [(b"IHDR", header), (b"IDAT", data), (b"IEND", b"")]
    body = b"".join(struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d)) for t, d in chunks)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def two_classes(root: Path, size: tuple[int, int] = (24, 16)) -> Path:
    """``root/train`` and ``root/test``, each with classes a and b of grey images ``size`` (H, W), dark and light."""
    for split in ("train", "test"):
        for label, name in enumerate("ab"):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(3):
                Image.new("L", size[::-1], 40 + 150 * label + i).save(root / split / name / f"{name}{i}.png")
    return root


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = write_bomb(tmp_path / "small.png", 64, 48)
    assert decode(small, None, grey=True).shape == (48, 64), "the writer makes real PNG files"
    bomb = write_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 100_000, "400 megapixels in under 100 KB"
    limit = MAX_PIXELS // 1_000_000
    with pytest.raises(
        ZooError,
        match=rf"bomb.png is 400 megapixels, more than zoo decodes \({limit} megapixels\); "
        r"resize it first$",
    ):
        read_image(bomb, (1, 28, 28))

    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("pixels decoded"))
    max_pixels = Image.MAX_IMAGE_PIXELS
    # Below PIL's own limit (89 megapixels), and between it and twice it, where PIL only warns: zoo refuses both.
    for width, height in ((8000, 6000), (10000, 10000)):
        large = write_bomb(tmp_path / f"large{width}.png", width, height)
        with pytest.raises(ZooError, match=rf"large{width}.png is {width}x{height} pixels, more than zoo decodes"):
            decode(large, None, grey=True)
    assert max_pixels == Image.MAX_IMAGE_PIXELS, "PIL's global limit is left as it was"


def test_predict_gives_a_bomb_its_own_error_and_classifies_the_others(tmp_path: Path) -> None:
    arch = get_registry().architecture("cnn6")
    card = replace(new_card(arch), mean=(0.5,), std=(0.25,))
    torch.manual_seed(0)
    checkpoint.save(tmp_path / "model.safetensors", arch.build().state_dict(), card)
    good = []
    for i in range(2):
        good.append(tmp_path / f"good{i}.png")
        Image.new("L", (28, 28), 60 * i).save(good[-1])
    bomb = write_bomb(tmp_path / "bomb.png")

    paths = [str(good[0]), str(bomb), str(good[1])]
    result = CliRunner().invoke(cli, ["predict", str(tmp_path / "model.safetensors"), *paths, "--json"])
    assert result.exit_code == 1, "one file failed"
    message = f"{bomb} is 400 megapixels, more than zoo decodes ({MAX_PIXELS // 1_000_000} megapixels); resize it first"
    assert result.stderr == f"zoo: error: {message}\n", "one line, no traceback"
    assert isinstance(result.exception, SystemExit)
    predictions = json.loads(result.stdout)
    assert [p["image"] for p in predictions] == paths
    assert [bool(p["top"]) for p in predictions] == [True, False, True] and predictions[1]["error"]


def test_a_bomb_in_a_folder_is_a_counted_skip(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "d")
    write_bomb(root / "train" / "a" / "bomb.png")
    with pytest.warns(
        DataWarning,
        match=r"1 of 7 images in .* \(train\) could not be read and were skipped "
        r"\(first: .*bomb.png is 400 megapixels",
    ) as record:
        ds = folder_dataset(root)
    assert len(record) == 1
    images, labels = ds.load("train", tmp_path)
    assert images.shape == (6, 1, 24, 16) and labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_exif_orientation_applies_alike_in_predict_and_in_folders(tmp_path: Path) -> None:
    root = two_classes(tmp_path / "d")
    # Stored 24 wide and 16 high, with a gradient so that any rotation or flip changes the pixels.
    stored = Image.fromarray((np.arange(16 * 24).reshape(16, 24) % 251).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    stored.save(root / "train" / "a" / "_rotated.jpg", exif=exif, quality=95)
    stored.save(tmp_path / "plain.jpg", quality=95)

    plain = decode(tmp_path / "plain.jpg", None, grey=True)
    predicted = read_image(root / "train" / "a" / "_rotated.jpg", (1, 24, 16))[0]
    assert plain.shape == (16, 24) and np.array_equal(predicted, np.rot90(plain, k=-1)), "displayed upright"
    images, _ = folder_dataset(root).load("train", tmp_path)
    assert np.array_equal(images[0, 0].numpy(), predicted), "training sees what predict sees"


def test_float_and_16_bit_images_keep_their_brightness(tmp_path: Path) -> None:
    ramp = np.linspace(0, 1, 32, dtype=np.float32).reshape(4, 8)
    Image.fromarray(ramp).save(tmp_path / "unit.tif")
    expected = np.rint(ramp * 255).astype(np.uint8)
    assert np.array_equal(decode(tmp_path / "unit.tif", None, grey=True), expected)
    assert np.array_equal(decode(tmp_path / "unit.tif", None, grey=False), np.repeat(expected[..., None], 3, axis=2))

    Image.fromarray(ramp * 4 - 1).save(tmp_path / "wide.tif")  # -1..3: stretched from its minimum to its maximum
    assert np.array_equal(decode(tmp_path / "wide.tif", None, grey=True), expected)

    deep = (np.arange(32, dtype=np.uint16).reshape(4, 8) * 8 * 257).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as stored:
        assert stored.mode == "I;16"
    assert np.array_equal(decode(tmp_path / "deep.png", None, grey=True), (deep // 257).astype(np.uint8))

    for split in ("train", "test"):
        for name, value in {"a": 30000, "b": 60000}.items():
            (tmp_path / "d" / split / name).mkdir(parents=True)
            Image.fromarray(np.full((6, 6), value, np.uint16)).save(tmp_path / "d" / split / name / "x.png")
    ds = folder_dataset(tmp_path / "d")
    images, _ = ds.load("train", tmp_path)
    assert ds.shape == (1, 6, 6) and images[:, 0, 0, 0].tolist() == [117, 233], "30000 / 257 and 60000 / 257"


def test_shrinking_averages_whole_pixels_so_an_enlarged_image_comes_back_exactly(tmp_path: Path) -> None:
    """Images saved 4x larger with nearest-neighbour (as editors zoom) were classified right 2 times of 5: bilinear
    shrinking blurred each pixel into its neighbours. Box averaging gives the original back, in predict and in
    the weights' own transforms alike; enlarging stays bilinear (smooth, not blocky)."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(28, 28), dtype=np.uint8)
    big = tmp_path / "big.png"
    Image.fromarray(pixels).resize((112, 112), Image.Resampling.NEAREST).save(big)
    assert np.array_equal(read_image(big, (1, 28, 28))[0], pixels)
    weights = get_registry().find_weights("lenet_bn", "fashionmnist")
    x = weights.transforms(invert=False)(Image.open(big))
    assert torch.equal(x, weights.transforms(invert=False)(Image.fromarray(pixels)))
    small = tmp_path / "small.png"
    Image.fromarray(pixels[:14, :14]).save(small)
    grown = read_image(small, (1, 28, 28))[0]
    assert not np.array_equal(grown[::2, ::2], grown[1::2, ::2]), "enlarging interpolates, not repeats"
