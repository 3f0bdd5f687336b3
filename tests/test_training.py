"""The shared trainer, `zoo eval` and `zoo predict`, on the generated seven-segment digits (no download)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from conftest import FakeDist
from safetensors import safe_open

import zoo as library
from zoo import checkpoint
from zoo.card import Provider
from zoo.cli import cli
from zoo.errors import SettingError, ZooError
from zoo.files import atomic_path
from zoo.loader import load_registry
from zoo.training import TrainConfig, TrainingInterrupted, _Reporter, lr_at, resolve_config, train

SMALL = ["--limit", "2000", "--batch-size", "64", "--quiet"]


def zoo(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small trained run shared by the eval and predict tests."""
    out = tmp_path_factory.mktemp("runs") / "cnn6"
    result = zoo("train", "cnn6", "sevenseg", "--epochs", "4", "--out", str(out), *SMALL)
    assert result.exit_code == 0, result.output
    return out


def test_train_writes_a_complete_run_directory(run_dir: Path) -> None:
    names = {p.name for p in run_dir.iterdir()}
    assert names == {
        "config.json",
        "metrics.jsonl",
        "best.safetensors",
        "last.safetensors",
        "summary.json",
        "report.txt",
        "curves.png",
        "confusion.png",
        "misses.png",
    }
    for path in run_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, f"{path.name} is not readable by others"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["architecture"] == "mnist_cnn6_16" and config["torch_version"] == torch.__version__
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test_accuracy"] > 0.9, "seven-segment digits are easy; a broken loop would not get there"
    assert set(summary["per_class"]) == set("0123456789")
    for png in ("curves.png", "confusion.png", "misses.png"):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoints_carry_metadata_and_the_optimizer_only_in_last(run_dir: Path) -> None:
    best, last = checkpoint.load(run_dir / "best.safetensors"), checkpoint.load(run_dir / "last.safetensors")
    assert best.card.architecture == "mnist_cnn6_16" and best.card.dataset == "sevenseg"
    assert best.card.classes == tuple("0123456789") and best.card.input_shape == (1, 28, 28)
    assert best.card.mean == (0.1002,) and best.card.zoo_version == "0.1.0"
    assert best.card.provider == Provider("zoo-classifiers", "0.1.0") and best.card.config["seed"] == 0
    assert best.optimizer is None and last.optimizer is not None
    assert last.card.epoch == 4 and last.resume is not None and len(last.resume["history"]) == 4
    with safe_open(str(run_dir / "best.safetensors"), framework="pt") as f:
        assert f.metadata()["architecture"] == "mnist_cnn6_16"  # readable by any safetensors tool


def test_same_seed_gives_bit_identical_weights(tmp_path: Path) -> None:
    options = {"epochs": 1, "limit": 600, "batch_size": 50, "progress": "none", "seed": 7}
    a = train("lenet", "sevenseg", out=tmp_path / "a", **options)
    b = train("lenet", "sevenseg", out=tmp_path / "b", **options)
    c = train("lenet", "sevenseg", out=tmp_path / "c", **{**options, "seed": 8})
    weights = [checkpoint.load(r.path / "last.safetensors").weights for r in (a, b, c)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not torch.equal(weights[0]["features.0.weight"], weights[2]["features.0.weight"])


@pytest.mark.parametrize(
    "regularisers",
    [{"augment": "crop_flip"}, {"augment": "affine_erase", "label_smoothing": 0.1, "ema": 0.9}],
    ids=["crop_flip", "affine_erase-smoothing-ema"],
)
def test_interrupted_and_resumed_equals_uninterrupted(
    regularisers: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lenet_bn has dropout and batch norm, augmentation adds randomness per step, and the moving average of the
    weights is state of its own: a resumed run ends with the same weights, best (the average) and last alike."""
    options = {"epochs": 2, "limit": 500, "batch_size": 50, "progress": "none", **regularisers}
    whole = train("lenet", "sevenseg_rgb", out=tmp_path / "whole", **options)

    original_step = _Reporter.step

    def interrupt_at_step_13(self: _Reporter, state: object, seconds: float) -> None:
        original_step(self, state, seconds)  # type: ignore[arg-type]
        if state.epoch * 10 + state.step == 13:  # type: ignore[attr-defined]
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(_Reporter, "step", interrupt_at_step_13)
    with pytest.raises(TrainingInterrupted, match=r"stopped by SIGINT at epoch 2, step 3; continue with: zoo train"):
        train("lenet", "sevenseg_rgb", out=tmp_path / "cut", **options)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the handler is restored"
    progress = checkpoint.load(tmp_path / "cut" / "last.safetensors").resume["progress"]  # type: ignore[index]
    assert (progress["epoch"], progress["step"]) == (1, 3)
    monkeypatch.undo()

    resumed = train(resume=tmp_path / "cut", progress="none")
    for kept in ("last.safetensors", "best.safetensors"):
        a = checkpoint.load(whole.path / kept).weights
        b = checkpoint.load(resumed.path / kept).weights
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), kept
    timing = {"seconds", "images_per_s"}  # the running loss is summed in another order: equal to rounding
    for h, r in zip(whole.history, resumed.history, strict=True):
        assert {k: v for k, v in r.items() if k not in timing} == pytest.approx(
            {k: v for k, v in h.items() if k not in timing}, rel=1e-6
        )


@pytest.mark.slow
def test_sigterm_leaves_a_checkpoint_and_resume_finishes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "zoo", "train", "cnn6", "sevenseg", "--epochs", "30", "--out", str(out), *SMALL]
    with subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("epoch 1/30"):
                proc.send_signal(signal.SIGTERM)
                break
        assert proc.wait(timeout=60) == 130
        assert "continue with: zoo train --resume" in proc.stderr.read()
    done = checkpoint.load(out / "last.safetensors").card.epoch
    assert 1 <= done < 30
    result = subprocess.run(
        [sys.executable, "-m", "zoo", "train", "--resume", str(out), "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert checkpoint.load(out / "last.safetensors").card.epoch == 30
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 30


def test_tutorial_recipe_is_the_notebook_settings() -> None:
    registry = load_registry()
    config = resolve_config(registry.architectures["mnist_cnn32"], registry.datasets["mnist"], "tutorial")
    assert (config.optimizer, config.lr, config.batch_size, config.epochs) == ("adam", 1e-3, 10, 5)
    assert (config.schedule, config.val_split, config.seed) == ("constant", 0.2, 42)
    cifar = resolve_config(registry.architectures["cifar_seq"], registry.datasets["cifar10"], "tutorial", epochs=2)
    assert cifar.limit == 2000 and cifar.epochs == 2  # an explicit option beats the recipe


def test_learning_rate_schedules() -> None:
    base = TrainConfig(architecture="a", dataset="d", lr=0.1)
    onecycle = [lr_at(base, s, 100) for s in range(101)]
    assert onecycle[0] == pytest.approx(0.004) and max(onecycle) == pytest.approx(0.1)
    assert onecycle.index(max(onecycle)) == 25 and onecycle[100] == pytest.approx(1e-5)
    cosine = TrainConfig(architecture="a", dataset="d", lr=0.1, schedule="cosine")
    assert lr_at(cosine, 0, 10) == 0.1 and lr_at(cosine, 10, 10) == pytest.approx(0)
    assert {
        lr_at(TrainConfig(architecture="a", dataset="d", lr=0.1, schedule="constant"), s, 10) for s in range(10)
    } == {0.1}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "--epochs must be positive, got 0"),
        (["--lr", "-1"], "--lr must be positive"),
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--optimizer", "rmsprop"], "--optimizer must be one of adam, adamw, sgd"),
        (["--val-split", "1.5"], "--val-split is a fraction"),
        (["--device", "tpu"], "--device must be auto, cpu, cuda or mps"),
        (["--epochs", "many"], "Invalid value for '--epochs': 'many' is not a valid integer"),
        (["--augment", "rotate"], "--augment must be one of none, crop, flip, crop_flip, affine, erase"),
        (["--label-smoothing", "1"], "--label-smoothing is a share of each target in [0, 1), got 1.0"),
        (["--ema", "1.5"], "--ema is a decay in (0, 1), 0.999 say, or 0 for none; got 1.5"),
    ],
)
def test_bad_training_options(args: list[str], message: str, tmp_path: Path) -> None:
    result = zoo("train", "cnn6", "sevenseg", "--out", str(tmp_path / "r"), *args)
    assert result.exit_code != 0
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "r").exists(), "a rejected run leaves no directory behind"


def test_an_existing_run_is_never_overwritten(run_dir: Path) -> None:
    before = (run_dir / "best.safetensors").read_bytes()
    result = zoo("train", "cnn6", "sevenseg", "--out", str(run_dir), *SMALL)
    assert result.exit_code == 1 and "already holds files" in result.stderr
    assert (run_dir / "best.safetensors").read_bytes() == before


def test_unwritable_output_directory(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = zoo("train", "cnn6", "sevenseg", "--out", str(locked / "run"), *SMALL)
    assert result.exit_code == 1 and "cannot write to" in result.stderr


def test_output_path_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = zoo("train", "cnn6", "sevenseg", "--runs-dir", str(tmp_path / "file" / "runs"), *SMALL)
    assert result.exit_code == 1 and "cannot write to" in result.stderr
    assert "pass --runs-dir or --out DIR" in result.stderr
    result = zoo("train", "cnn6", "sevenseg", "--runs-dir", str(tmp_path / "file"), *SMALL)
    assert result.exit_code == 2 and "is a file" in result.stderr


def test_eval_a_run_and_a_weights_file(run_dir: Path, tmp_path: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    result = zoo("eval", str(run_dir), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["accuracy"] == pytest.approx(summary["test_accuracy"]) and data["dataset"] == "sevenseg"
    text = zoo("eval", str(run_dir / "best.safetensors"), "sevenseg", "--out", str(tmp_path / "e")).output
    assert "precision" in text and "confusion matrix" in text
    assert {p.name for p in (tmp_path / "e").iterdir()} == {"report.txt", "confusion.png", "misses.png"}


def test_eval_rejects_an_incompatible_dataset(run_dir: Path) -> None:
    result = zoo("eval", str(run_dir), "cifar10")
    assert result.exit_code == 1
    assert "was trained on 1x28x28 images in 10 classes; cifar10 has 3x32x32" in result.stderr


def test_corrupt_and_mismatched_checkpoints(run_dir: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a checkpoint at all")
    result = zoo("eval", str(corrupt))
    assert result.exit_code == 1 and "is not a readable safetensors checkpoint" in result.stderr

    saved = checkpoint.load(run_dir / "best.safetensors")
    mismatched = tmp_path / "lenet.safetensors"
    checkpoint.save(mismatched, saved.weights, replace(saved.card, architecture="lenet_bn"))
    result = zoo("eval", str(mismatched))
    assert result.exit_code == 1 and "do not fit lenet_bn for 1x28x28 images in 10 classes" in result.stderr
    assert result.stderr.count("\n") == 1

    fewer = tmp_path / "fewer.safetensors"
    checkpoint.save(fewer, saved.weights, replace(saved.card, classes=tuple("01234")))
    assert "do not fit mnist_cnn6_16 for 1x28x28 images in 5 classes" in zoo("eval", str(fewer)).stderr


def test_predict_images_of_any_size_and_mode(run_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    registry = load_registry()
    images, labels = registry.datasets["sevenseg"].load("test", tmp_path)
    paths = []
    for i, mode, size in ((0, "L", 28), (1, "RGB", 84), (2, "RGBA", 56)):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray(images[i, 0].numpy()).convert(mode).resize((size, size)).save(path)
        paths.append(str(path))
    (tmp_path / "notes.txt").write_text("not an image")
    result = zoo("predict", str(run_dir), *paths, str(tmp_path / "notes.txt"), "--json")
    assert result.exit_code == 1, "one file failed"
    assert "notes.txt: not an image zoo can read" in result.stderr
    predictions = json.loads(result.stdout)
    assert [p["top"][0][0] for p in predictions[:3]] == [str(int(label)) for label in labels[:3]]
    assert all(len(p["top"]) == 3 and p["top"][0][1] > 0.5 for p in predictions[:3])
    assert predictions[3]["error"]


def test_atomic_writes_leave_the_previous_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "last.safetensors"
    target.write_text("previous")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]


def test_library_api_matches_the_cli(tmp_path: Path) -> None:
    result = library.train("cnn32", "sevenseg", out=tmp_path / "r", epochs=1, limit=500, progress="none")
    assert result.path == tmp_path / "r" and 0 <= result.test_accuracy <= 1
    assert library.evaluate(result.path).accuracy == pytest.approx(result.test_accuracy)
    with pytest.raises(ZooError, match="needs an architecture"):
        library.train()


RECIPE_PLUGIN = """
import zoo


@zoo.hookimpl
def register_architectures(register):
    register(zoo.Architecture(name="recipe_net", builder="zoo.plugins.nets:MnistCNN6_16", summary="cnn6, again",
                              default_recipe=zoo.Recipe(dataset="sevenseg", epochs=1, limit=128)))
    register(zoo.Architecture(name="no_recipe_net", builder="zoo.plugins.nets:MnistCNN6_16", summary="no data set"))
"""


def test_the_library_speaks_of_arguments_and_takes_the_recipes_data_set(fake_dist: FakeDist, tmp_path: Path) -> None:
    with pytest.raises(SettingError, match=r"^lr must be positive, got 0$"):
        library.train("cnn6", "sevenseg", lr=0)
    fake_dist("zoo-recipe-net", RECIPE_PLUGIN)
    result = library.train("recipe_net", out=tmp_path / "r", progress="none")
    assert result.config.dataset == "sevenseg" and result.config.limit == 128
    with pytest.raises(ZooError, match="no_recipe_net's recipe names no data set; name one"):
        library.train("no_recipe_net")
    cli = zoo("train", "no_recipe_net")
    assert cli.exit_code == 1 and "name one: zoo train no_recipe_net DATASET" in cli.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--resume", "somewhere", "--epochs", "3"], "--resume RUN continues a run with its own settings"),
        (["cnn6", "--resume", "somewhere"], "--resume RUN continues a run with its own settings"),
        ([], "missing ARCHITECTURE (see `zoo list`), or --resume RUN"),
    ],
)
def test_train_usage_errors(args: list[str], message: str) -> None:
    result = zoo("train", *args)
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1


def test_resume_of_something_that_is_not_a_run(tmp_path: Path) -> None:
    result = zoo("train", "--resume", str(tmp_path))
    assert result.exit_code == 1 and "is not a run directory (no config.json)" in result.stderr


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"optimizer": "sgd", "schedule": "cosine", "lr": 0.05}, torch.optim.SGD),
        ({"optimizer": "adam", "schedule": "constant"}, torch.optim.Adam),
        ({"optimizer": "adamw", "amp": True, "augment": "crop"}, torch.optim.AdamW),
    ],
    ids=["sgd-cosine", "adam-constant", "adamw-amp-crop"],
)
def test_optimizers_schedules_and_mixed_precision_train(
    options: dict[str, object], expected: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import zoo.training

    made: list[torch.optim.Optimizer] = []
    original = zoo.training._make_optimizer
    monkeypatch.setattr(zoo.training, "_make_optimizer", lambda *a: made.append(original(*a)) or made[-1])
    result = train(
        "cnn6", "sevenseg", out=tmp_path / "r", epochs=2, limit=1500, batch_size=50, progress="none", **options
    )
    assert type(made[0]) is expected
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.test_accuracy > 0.5


def test_a_device_that_is_not_there(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = zoo("train", "cnn6", "sevenseg", "--device", "cuda", "--out", str(tmp_path / "r"), *SMALL)
    assert result.exit_code == 1 and "--device cuda: PyTorch sees no such device here" in result.stderr


def test_a_dark_digit_on_white_paper_is_inverted_by_itself(run_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    images, labels = load_registry().datasets["sevenseg"].load("test", tmp_path)
    expected = [str(int(label)) for label in labels[:4]]
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"paper{i}.png")
        Image.fromarray(255 - images[i, 0].numpy()).save(paths[-1])  # dark ink, light paper
    auto = library.predict(run_dir, paths)
    assert [p.inverted for p in auto] == [True] * 4 and [p.top[0][0] for p in auto] == expected
    assert not any(p.inverted for p in library.predict(run_dir, paths, invert=False))
    shown = zoo("predict", str(run_dir), str(paths[0]))
    assert "(inverted: its background is the opposite of the training images')" in shown.stdout
    original = tmp_path / "screen.png"
    Image.fromarray(images[0, 0].numpy()).save(original)  # light ink on a dark background, as trained
    assert not library.predict(run_dir, [original])[0].inverted


def test_train_says_what_to_do_next_and_a_complete_run_has_nothing_to_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = zoo("train", "cnn6", "sevenseg", "--epochs", "1", "--max-steps", "3", "--out", str(out), *SMALL)
    assert result.exit_code == 0, result.output
    assert f"next: zoo eval {out} | zoo predict {out} IMAGE.png | zoo export {out}" in result.stdout
    before = (out / "best.safetensors").read_bytes()
    resumed = zoo("train", "--resume", str(out))
    assert resumed.exit_code == 0 and f"run {out} is complete (1 epochs); nothing to resume" in resumed.stderr
    assert (out / "best.safetensors").read_bytes() == before


def test_eval_uses_the_runs_data_dir_and_warns_when_class_names_differ(
    idx_root: Callable[[str, int], Path], tmp_path: Path
) -> None:
    root = idx_root("MNIST", 64)
    idx_root("FashionMNIST", 64)
    out = tmp_path / "run"
    assert (
        zoo(
            "train",
            "cnn6",
            "mnist",
            "--data-dir",
            str(root),
            "--epochs",
            "1",
            "--out",
            str(out),
            "--batch-size",
            "16",
            "--quiet",
        ).exit_code
        == 0
    )
    result = zoo("eval", str(out), "--json")  # no --data-dir: the run's own
    assert result.exit_code == 0, result.output
    other = zoo("eval", str(out), "fashionmnist")
    assert other.exit_code == 0, other.output
    assert "zoo: warning: fashionmnist's classes (T-shirt/top, Trouser, Pullover, ...) are not the ones" in other.stderr


def test_load_gives_an_eval_mode_module_with_its_metadata(run_dir: Path) -> None:
    model = library.load(run_dir)
    assert isinstance(model, torch.nn.Module) and not model.training
    assert model.zoo_card.classes == tuple("0123456789") and model.zoo_card.architecture == "mnist_cnn6_16"
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_library_makes_waiting_openmp_threads_sleep_unless_told(given: str | None, expected: str) -> None:
    """`import zoo` sets OMP_WAIT_POLICY before torch loads, as the command does: spinning threads slow training
    beside busy processes (tests/benchmarks/under_load.py); a value the user set stays."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | (
        {"OMP_WAIT_POLICY": given} if given else {}
    )
    code = "import os, zoo, torch; print(os.environ['OMP_WAIT_POLICY'])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.strip() == expected, done.stderr


def test_without_a_bar_long_epochs_still_report_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through a pipe an epoch printed nothing until it ended (155 s of silence): now a line at least every
    PROGRESS_EVERY_S, here 0 so that every 20th step reports."""
    import zoo.training

    monkeypatch.setattr(zoo.training, "PROGRESS_EVERY_S", 0.0)
    train("cnn6", "sevenseg", epochs=1, limit=1400, batch_size=16, out=tmp_path / "run", progress="lines")
    lines = capsys.readouterr().err.splitlines()
    steps = [line for line in lines if line.startswith("epoch 1/1  step ")]
    assert [line.split()[3].split("/")[0] for line in steps[:2]] == ["20", "40"], lines
    assert "train loss" in steps[0] and "img/s" in steps[0]


def test_the_default_recipe_fits_a_small_data_set_and_keeps_a_large_one() -> None:
    from zoo.training import MIN_STEPS, fit_to_data

    assert fit_to_data(54_000, 128, 5) == (128, 5), "the data sets the recipes were written for keep them"
    batch, epochs = fit_to_data(113, 128, 5)
    assert batch == 16 and epochs * (113 // 16) >= MIN_STEPS
    assert fit_to_data(10, 128, 5) == (16, 100), "at most 100 epochs: a note says the run is short"
    config = resolve_config(load_registry().architecture("cnn6"), load_registry().dataset("sevenseg"), limit=200)
    assert (config.batch_size, config.epochs) == (16, 28)
    pinned = resolve_config(load_registry().architecture("cnn6"), load_registry().dataset("sevenseg"), limit=200,
                            batch_size=64)  # fmt: skip
    assert (pinned.batch_size, pinned.epochs) == (64, 5), "a length the user set is kept"


def test_the_moving_average_is_what_is_validated_kept_and_tested(tmp_path: Path) -> None:
    """--ema: best.safetensors holds the average (every epoch is "best" without a validation split), last.safetensors
    the trained weights and the average beside them; the test accuracy is the average's, as `zoo eval` scores it."""
    options = {"epochs": 2, "limit": 300, "batch_size": 50, "val_split": 0.0, "progress": "none"}
    run = train("cnn6", "sevenseg", out=tmp_path / "ema", ema=0.8, **options)
    best, last = (checkpoint.load(run.path / f) for f in ("best.safetensors", "last.safetensors"))
    assert last.average is not None and best.average is None
    assert all(torch.equal(best.weights[k], last.average[f"module.{k}"]) for k in best.weights)
    assert not torch.equal(best.weights["features.0.weight"], last.weights["features.0.weight"]), "not the last"
    assert library.evaluate(run.path).accuracy == run.test_accuracy
    plain = train("cnn6", "sevenseg", out=tmp_path / "plain", **options)
    trained = checkpoint.load(plain.path / "last.safetensors").weights
    assert all(torch.equal(trained[k], last.weights[k]) for k in trained), "the average changes nothing it watches"
    assert json.loads((run.path / "config.json").read_text())["train"]["ema"] == 0.8


def test_label_smoothing_changes_the_targets_and_nothing_else(tmp_path: Path) -> None:
    options = {"max_steps": 3, "limit": 300, "batch_size": 50, "progress": "none", "augment": "crop"}
    smooth = train("cnn6", "sevenseg", out=tmp_path / "smooth", label_smoothing=0.2, **options)
    sharp = train("cnn6", "sevenseg", out=tmp_path / "sharp", **options)
    a, b = (checkpoint.load(r.path / "last.safetensors").weights for r in (smooth, sharp))
    assert not torch.equal(a["features.0.weight"], b["features.0.weight"])
    assert smooth.history[0]["train_loss"] > sharp.history[0]["train_loss"], "smoothed targets cost more to fit"
    assert smooth.config.label_smoothing == 0.2 and smooth.config.describe().endswith("label_smoothing=0.2 on sevenseg")


def test_a_small_data_set_is_pointed_at_weights_trained_on_its_classes(tmp_path: Path) -> None:
    """lenet_bn's default weights are FashionMNIST's; for 100 seven-segment digits its MNIST weights are the start
    (97.4% on the test split against 44.1% from FashionMNIST's, docs/training.md)."""
    result = zoo("train", "lenet", "sevenseg", "--limit", "100", "--max-steps", "1", "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    assert "a small data set trains best from published weights: add --init lenet_bn:mnist" in result.stderr
