"""Your own images as a data set: layouts, normalisation, the cache, and clear errors."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from zoo import checkpoint, folders
from zoo.cli import cli
from zoo.errors import DataWarning, ZooError
from zoo.folders import folder_dataset


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "folders"


def make_folder(root: Path, classes: dict[str, int], size: tuple[int, int] = (20, 24), mode: str = "L") -> Path:
    """Class folders of images whose brightness tells the class apart."""
    rng = np.random.default_rng(0)
    for label, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 60, size=(*size, 3), dtype=np.uint8) + np.uint8(90 * label)
            Image.fromarray(pixels).convert(mode).save(root / name / f"{name}-{i}.png")
    return root


def test_a_folder_of_class_folders_is_a_data_set(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "shapes", {"cat": 40, "dog": 40, "eel": 40})
    ds = folder_dataset(root)
    assert ds.classes == ("cat", "dog", "eel") and ds.shape == (1, 20, 24) and ds.location == str(root.resolve())
    assert ds.train_size + ds.test_size == 120 and 10 < ds.test_size < 40, "about a fifth is held out for test"
    images, labels = ds.load("train", tmp_path)
    assert images.shape == (ds.train_size, 1, 20, 24) and set(labels.tolist()) == {0, 1, 2}
    pixels = images.float() / 255
    assert ds.mean[0] == pytest.approx(float(pixels.mean()), abs=1e-3)
    assert ds.std[0] == pytest.approx(float(pixels.std()), abs=1e-3)
    assert folder_dataset(root, grayscale=False).shape == (3, 20, 24)
    assert folder_dataset(root, image_size=16).shape == (1, 16, 16)


def test_train_and_test_folders(tmp_path: Path) -> None:
    make_folder(tmp_path / "d" / "train", {"a": 10, "b": 12}, mode="RGB")
    make_folder(tmp_path / "d" / "test", {"a": 3, "b": 4}, mode="RGB")
    ds = folder_dataset(tmp_path / "d")
    assert (ds.train_size, ds.test_size, ds.shape, ds.classes) == (22, 7, (3, 20, 24), ("a", "b"))


def test_decoded_once_then_read_from_the_cache_until_a_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: Path
) -> None:
    root = make_folder(tmp_path / "d", {"a": 10, "b": 10})
    first = folder_dataset(root).load("train", tmp_path)[0]
    assert len(list(cache.iterdir())) == 1
    real_decode = folders._decode
    monkeypatch.setattr(folders, "_decode", lambda *a: pytest.fail("decoded again"))
    again = folder_dataset(root).load("train", tmp_path)[0]
    assert (first == again).all()

    changed, _ = folders._layout(root.resolve()).files["train"][0]
    Image.new("L", (24, 20), 255).save(changed)
    calls = []
    monkeypatch.setattr(folders, "_decode", lambda *a: calls.append(1) or real_decode(*a))
    after = folder_dataset(root).load("train", tmp_path)[0]
    assert calls == [1], "a changed file invalidates the cache"
    assert (after[0] == 255).all() and not (after == first).all()


def test_unreadable_images_are_skipped_with_one_warning(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"a": 10, "b": 10})
    for i in range(3):
        (root / "a" / f"zz-broken-{i}.png").write_text("not a png")
    with pytest.warns(DataWarning, match=r"could not be read and were skipped") as record:
        folder_dataset(root)
    assert len(record) == 1
    assert "of" in str(record[0].message) and "broken" in str(record[0].message)


def test_hidden_files_and_folders_are_left_out(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", {"a": 10, "b": 10})
    make_folder(root, {".ipynb_checkpoints": 5})  # real images, in a hidden class folder
    (root / ".DS_Store").mkdir()
    make_folder(root / "a", {".thumbnails": 3})  # and in a hidden folder inside a class
    Image.new("L", (24, 20)).save(root / "b" / ".hidden.png")
    (root / "a" / "._a-0.png").write_bytes(b"macOS metadata, not a PNG")  # would be an unreadable image
    ds = folder_dataset(root)
    assert ds.classes == ("a", "b") and ds.train_size + ds.test_size == 20
    images, _ = ds.load("train", tmp_path)
    assert len(images) == ds.train_size


def test_links_out_of_the_folder_are_skipped_and_counted(tmp_path: Path) -> None:
    outside = make_folder(tmp_path / "elsewhere", {"secret": 3, "more": 2})
    root = make_folder(tmp_path / "d", {"a": 10, "b": 10})
    (root / "a" / "escape.png").symlink_to(outside / "secret" / "secret-0.png")
    (root / "a" / "nested").symlink_to(outside / "more", target_is_directory=True)
    (root / "c").symlink_to(outside / "secret", target_is_directory=True)  # a class folder elsewhere
    (root / "b" / "inside.png").symlink_to(root / "a" / "a-0.png")  # a link within the folder is read
    (root / "b" / "loop").symlink_to(root / "b", target_is_directory=True)  # and a loop is read once
    with pytest.warns(
        DataWarning,
        match=r"^3 link\(s\) in .*/d lead outside it and were skipped "
        r"\(first: a/escape.png\); copy the files",
    ) as record:
        ds = folder_dataset(root)
    assert len(record) == 1
    assert ds.classes == ("a", "b") and ds.train_size + ds.test_size == 21

    split = make_folder(tmp_path / "s" / "train", {"a": 4, "b": 4}).parent
    make_folder(split / "test", {"a": 2, "b": 2})
    (split / "train" / "a" / "escape.png").symlink_to(outside / "secret" / "secret-0.png")
    (split / "test" / "c").symlink_to(outside / "secret", target_is_directory=True)
    (split / "test" / "b" / "escape.png").symlink_to(outside / "secret" / "secret-1.png")
    with pytest.warns(DataWarning, match="lead outside it") as record:
        ds = folder_dataset(split)
    messages = [str(w.message) for w in record]
    assert len(messages) == 2, "one warning per split, counting its links"
    assert re.match(r"1 link\(s\) in .*/s \(train\) lead outside it .*\(first: train/a/escape.png\)", messages[0])
    assert re.match(r"2 link\(s\) in .*/s \(test\) lead outside it .*\(first: test/b/escape.png\)", messages[1])
    assert (ds.train_size, ds.test_size) == (8, 4)


@pytest.mark.parametrize("damage", ["garbage", "names", "dtype", "shape", "labels"])
def test_a_corrupt_cache_entry_is_decoded_again_and_rewritten(tmp_path: Path, cache: Path, damage: str) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    root = make_folder(tmp_path / "d", {"a": 10, "b": 10})
    # Copies: tensors read from the cache map its file, which is overwritten in place below.
    images, labels = (t.clone() for t in folder_dataset(root).load("train", tmp_path))
    (entry,) = cache.iterdir()
    if damage == "garbage":
        entry.write_bytes(b"\x00\xff" * 100)
    else:
        wrong = {
            "names": {"pixels": images, "labels": labels},
            "dtype": {"images": images.float(), "labels": labels},
            "shape": {"images": images[:, :, :5], "labels": labels[:-1]},
            "labels": {"images": images, "labels": labels + 7},
        }[damage]
        save_file({k: v.contiguous() for k, v in wrong.items()}, str(entry))
    with pytest.warns(DataWarning, match=r"the cache entry .* for .* \(train\) was corrupt and has been rewritten"):
        again, again_labels = folder_dataset(root).load("train", tmp_path)
    assert torch.equal(again, images) and torch.equal(again_labels, labels)
    rewritten = load_file(str(entry))
    assert torch.equal(rewritten["images"], images) and torch.equal(rewritten["labels"], labels)


def test_bad_folders_say_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "empty" / "only").mkdir(parents=True)
    with pytest.raises(ZooError, match=r"has 0 class folder\(s\) with training images \(only without any\); put "
                                        r"images in .*/<class>/\*\.png"):  # fmt: skip
        folder_dataset(tmp_path / "empty")
    (tmp_path / "empty" / "other").mkdir()  # two class folders, neither with an image: not "2 with images"
    with pytest.raises(ZooError, match=r"has 0 class folder\(s\) with training images \(only, other without any\)"):
        folder_dataset(tmp_path / "empty")
    root = make_folder(tmp_path / "mixed", {"a": 6, "b": 6})
    Image.new("L", (50, 50)).save(root / "a" / "big.png")
    with pytest.raises(ZooError, match=r"come in 2 sizes \(20x24: \d+, 50x50: 1\); pass --image-size N"):
        folder_dataset(root)
    assert folder_dataset(root, image_size=28).shape == (1, 28, 28)


def test_links_in_a_loop_are_skipped_like_broken_ones(tmp_path: Path) -> None:
    """A link to itself, and two links to each other: `DirEntry` raised "Too many levels of symbolic links"."""
    root = make_folder(tmp_path / "digits", {"a": 6, "b": 6})
    (root / "a" / "self.png").symlink_to("self.png")
    (root / "a" / "sub").symlink_to("../b/sub")
    (root / "b" / "sub").symlink_to("../a/sub")
    (root / "loop").symlink_to("loop")
    data = folder_dataset(root)
    assert data.classes == ("a", "b") and data.train_size + data.test_size == 12


def test_image_options_on_a_registered_data_set_are_refused_not_ignored() -> None:
    result = CliRunner().invoke(cli, ["train", "cnn6", "sevenseg", "--image-size", "32"])
    assert result.exit_code == 1 and "--image-size applies to folders of images; sevenseg's images are 1x28x28" in (
        result.stderr
    )
    result = CliRunner().invoke(cli, ["train", "cnn6", "sevenseg", "--color"])
    assert result.exit_code == 1 and "--grayscale applies to folders of images" in result.stderr


def test_train_eval_predict_and_export_on_a_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets", {"cat": 60, "dog": 60})
    run = tmp_path / "run"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "cnn6",
            str(root),
            "--image-size",
            "28",
            "--epochs",
            "5",
            "--batch-size",
            "16",
            "--out",
            str(run),
            "--quiet",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["test_accuracy"] > 0.9, "brightness separates the classes"
    card = checkpoint.load(run / "best.safetensors").card
    assert card.dataset == str(root.resolve()) and card.classes == ("cat", "dog")
    assert card.input_shape == (1, 28, 28) and card.mean == folder_dataset(root, image_size=28).mean

    # A folder recorded in a file is read only when named again.
    unnamed = CliRunner().invoke(cli, ["eval", str(run)])
    assert unnamed.exit_code == 1 and f"was trained on the folder {root.resolve()}; name the data set" in unnamed.stderr
    assert CliRunner().invoke(cli, ["eval", str(run), str(root), "--out", str(tmp_path / "e")]).exit_code == 0
    alone = CliRunner().invoke(cli, ["export", str(run), "--onnx", "--out", str(tmp_path / "x")])
    assert alone.exit_code == 0 and " real " not in alone.stdout and "pass --dataset" in alone.stderr
    exported = CliRunner().invoke(cli, ["export", str(run), "--onnx", "--dataset", str(root)])
    assert exported.exit_code == 0 and " real " in exported.output, "the folder's test images feed the parity check"
    dog = sorted((root / "dog").iterdir())[0]
    predicted = CliRunner().invoke(cli, ["predict", str(run / "export" / "mnist_cnn6_16.onnx"), str(dog), "--json"])
    assert json.loads(predicted.stdout)[0]["top"][0][0] == "dog"


@pytest.mark.slow
def test_a_small_folder_gets_a_recipe_that_learns_and_next_commands_that_work(tmp_path: Path) -> None:
    """120 images with the default recipe (batch 128, 5 epochs) were 5 optimiser steps: one class for everything,
    silently. The batch and epochs now fit the data, and `next:` names the folder `zoo eval` needs."""
    root = make_folder(tmp_path / "pets", {"cat": 60, "dog": 60})
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "cnn6", str(root), "--image-size", "28", "--out", str(run)])
    assert result.exit_code == 0, result.output
    settings = json.loads((run / "config.json").read_text())["train"]
    images = folder_dataset(root, image_size=28).train_size * 0.9
    assert settings["batch_size"] == 16 and settings["epochs"] * (int(images) // 16) >= 300
    assert f"training images: batch 16 for {settings['epochs']} epochs" in result.stderr
    assert "a small data set trains best from published weights: add --init mnist_cnn6_16:mnist" in result.stderr
    (hint,) = [line for line in result.stdout.splitlines() if line.startswith("next: ")]
    dog = sorted((root / "dog").iterdir())[0]
    for command in hint.removeprefix("next: ").split(" | "):
        done = CliRunner().invoke(cli, shlex.split(command.replace("IMAGE.png", str(dog)))[1:])
        assert done.exit_code == 0, f"{command}: {done.output}"

    short = CliRunner().invoke(cli, ["train", "cnn6", str(root), "--image-size", "28", "--epochs", "1",
                                     "--out", str(tmp_path / "short"), "--quiet"])  # fmt: skip
    assert short.exit_code == 0 and "optimiser steps (" in short.stderr and "rarely train a network" in short.stderr


def test_info_on_a_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets", {"cat": 10, "dog": 10})
    result = CliRunner().invoke(cli, ["info", str(root)])
    assert result.exit_code == 0, result.output
    assert f"provided by folder {root.resolve()}" in result.output
    assert "shape 1x20x24, 2 classes: cat, dog" in result.output and "files: ready" in result.output
    sized = CliRunner().invoke(cli, ["info", "lenet", "--dataset", str(root)])
    assert sized.exit_code == 0 and "input 1x20x24, 2 classes (sized for folder_pets)" in sized.output


def test_a_folder_the_architecture_cannot_take_names_the_image_size_that_fits(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "tiny", {"a": 10, "b": 10}, size=(8, 8))
    result = CliRunner().invoke(cli, ["train", "lenet", str(root), "--max-steps", "1", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "cannot take 1x8x8 images" in result.output
    assert "or resize the folder's images: --image-size 28 --grayscale" in result.output
    other = make_folder(tmp_path / "other", {"a": 10, "b": 10})  # 20x24: cnn6_16 takes it, its MNIST weights do not
    init = CliRunner().invoke(cli, ["train", "cnn6", str(other), "--init", "cnn6:mnist", "--max-steps", "1",
                                    "--out", str(tmp_path / "s")])  # fmt: skip
    assert init.exit_code == 1 and "fine-tune on a data set of the same image shape" in init.output
    assert "(this folder's images resized: --image-size 28 --grayscale)" in init.output
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()
