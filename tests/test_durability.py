"""Crashes cost nothing: kills at any write, damaged state, full disks, divergence and bad settings."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from zoo import checkpoint, files
from zoo.cli import cli
from zoo.errors import ZooError
from zoo.files import KILL_AT_WRITE_ENV, atomic_path

TRAIN = [
    "train",
    "cnn6",
    "sevenseg",
    "--epochs",
    "2",
    "--limit",
    "600",
    "--batch-size",
    "64",
    "--augment",
    "crop_erase",
    "--label-smoothing",
    "0.1",
    "--ema",
    "0.9",
    "--quiet",
]


def zoo(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def run_zoo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zoo", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def outcome(run: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[tuple[object, ...]]]:
    """What a run computed: best and last weights, and each epoch's metrics without the timings."""
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return (
        checkpoint.load(run / "best.safetensors").weights,
        checkpoint.load(run / "last.safetensors").weights,
        [(m["epoch"], m["train_loss"], m["val_acc"]) for m in metrics],
    )


@pytest.mark.slow
def test_killed_at_any_write_then_resumed_ends_bit_identical(tmp_path: Path) -> None:
    """SIGKILL at each of a run's file writes: config, then per epoch best (when it improves), last and metrics,
    then the report, three plots and the summary."""
    reference = tmp_path / "reference"
    assert run_zoo(*TRAIN, "--out", str(reference)).returncode == 0
    best, last, metrics = outcome(reference)
    for n in itertools.count(1):
        run = tmp_path / f"killed-at-{n}"
        killed = run_zoo(*TRAIN, "--out", str(run), env={KILL_AT_WRITE_ENV: str(n)})
        if killed.returncode == 0:  # the run made fewer than n writes: each one was a kill point
            assert n > 10, "a kill at each of ten or more points"
            break
        assert killed.returncode == -signal.SIGKILL, f"write {n}: {killed.stderr}"
        assert any(p.name.startswith(".zoo-tmp-") for p in run.iterdir()), "killed between writing and renaming"
        # The same command continues: a run that never saved its config starts again, any other resumes.
        again = [*TRAIN, "--out", str(run)] if not (run / "config.json").exists() else ["train", "--resume", str(run)]
        finished = run_zoo(*again)
        assert finished.returncode == 0, f"write {n}: {finished.stderr}"
        assert not [p for p in run.iterdir() if p.name.startswith(".zoo-tmp-")], "stale temporary files are cleared"
        got_best, got_last, got_metrics = outcome(run)
        assert got_metrics == metrics, f"write {n}"
        for expected, got in ((best, got_best), (last, got_last)):
            assert all(torch.equal(expected[k], got[k]) for k in expected), f"write {n}: weights differ"


def test_resume_of_a_run_without_a_checkpoint_starts_it_again_in_place(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert zoo(*TRAIN, "--out", str(run), "--epochs", "1").exit_code == 0
    for name in ("last.safetensors", "best.safetensors", "metrics.jsonl"):
        (run / name).unlink()
    result = zoo("train", "--resume", str(run))
    assert result.exit_code == 0 and f"run {run} has no checkpoint yet: starting it again in place" in result.stderr
    assert checkpoint.load(run / "last.safetensors").card.epoch == 1


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "missing 1 required keyword-only argument: 'architecture'"),
        ({"architecture": 5, "dataset": "sevenseg"}, "architecture must be a string, got 5"),
        ({"architecture": "cnn6", "dataset": ["x"]}, "dataset must be a string, got ['x']"),
        ({"architecture": "cnn6", "dataset": "sevenseg", "epochs": "3"}, "epochs must be an integer"),
    ],
    ids=["empty", "architecture-number", "dataset-list", "epochs-string"],
)
def test_resume_of_a_damaged_config_says_which_setting(
    settings: dict[str, object], message: str, tmp_path: Path
) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"train": settings}))
    result = zoo("train", "--resume", str(tmp_path))
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert f"{tmp_path / 'config.json'} is damaged (" in result.stderr and message in result.stderr


def test_a_run_killed_after_its_last_checkpoint_finishes_on_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert zoo(*TRAIN, "--out", str(run)).exit_code == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(lines[0] + "\n")  # as if killed before the later epochs' metrics landed
    (run / "summary.json").unlink()  # and before the test split was scored
    result = zoo("train", "--resume", str(run))
    assert result.exit_code == 0 and "test accuracy" in result.stdout
    assert (run / "metrics.jsonl").read_text().splitlines() == lines, "rebuilt from the checkpoint's history"
    assert (run / "summary.json").is_file()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"progress": {"epoch": "x"}}, "the resume state in"),
        ({"progress": {"epoch": 1, "step": -5, "loss_sum": 0, "correct": 0, "seen": 0, "seconds": 0}}, "out of range"),
        ({"history": "none"}, "history is not a list"),
        ({"progress": {"epoch": 7, "step": 0}}, "progress says epoch 7, history has 2"),
    ],
)
def test_tampered_resume_state_is_refused(change: dict[str, object], message: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert zoo(*TRAIN, "--out", str(run), "--epochs", "2", "--max-steps", "12").exit_code == 0
    tensors, values = checkpoint.read(run / "last.safetensors")
    values["__resume__"] = {**values["__resume__"], **change}
    checkpoint.write(run / "last.safetensors", tensors, values)
    result = zoo("train", "--resume", str(run))
    assert result.exit_code == 1 and message in result.stderr and "unexpected" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr", "inf"], "--lr must be a finite number, got inf"),
        (["--weight-decay", "nan"], "--weight-decay must be a finite number, got nan"),
        (["--seed", str(2**70)], "--seed must be an integer from 0 to 2**63 - 1"),
    ],
)
def test_settings_that_cannot_train_are_refused(args: list[str], message: str, tmp_path: Path) -> None:
    result = zoo(*TRAIN, "--out", str(tmp_path / "run"), *args)
    assert result.exit_code == 1 and message in result.stderr


def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(tmp_path: Path) -> None:
    result = zoo(*TRAIN, "--out", str(tmp_path / "run"), "--optimizer", "sgd", "--lr", "1e30")
    assert result.exit_code == 1 and "training diverged at epoch 1" in result.stderr and "Lower --lr" in result.stderr
    assert "no checkpoint was written (it diverged in the first epoch)" in result.stderr, "none is kept: none exists"
    assert not (tmp_path / "run" / "last.safetensors").exists(), "diverged weights are never saved"


def test_labels_out_of_range_are_found_when_loading(idx_root: Callable[[str, int], Path], tmp_path: Path) -> None:
    root = idx_root("MNIST", 20)
    labels = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    data[-1] = 12
    labels.write_bytes(bytes(data))
    result = zoo(*TRAIN[:1], "cnn6", "mnist", "--data-dir", str(root), "--out", str(tmp_path / "run"))
    assert result.exit_code == 1 and "mnist's test split has label 12, outside 0..9" in result.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists(), "found before training"


def test_corrupt_idx_files_are_named(idx_root: Callable[[str, int], Path]) -> None:
    root = idx_root("MNIST", 20)
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    result = zoo("train", "cnn6", "mnist", "--data-dir", str(root))
    assert result.exit_code == 1 and f"{images} is corrupt or truncated" in result.stderr


def test_a_full_disk_names_the_directory_and_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "last.safetensors"
    target.write_text("previous")
    message = f"no space left to write last.safetensors in {tmp_path}; last.safetensors there is unchanged"
    with pytest.raises(ZooError, match=message), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")
    assert target.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]


def test_stale_temporary_files_of_dead_processes_are_cleared(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".zoo-tmp-{dead.stdout.strip()}-last.safetensors"
    live = tmp_path / f".zoo-tmp-{os.getppid()}-metrics.jsonl"  # a running process's file is left alone
    users = tmp_path / f".tmp{dead.stdout.strip()}-thesis.txt"  # only looks like a temporary name
    stale.write_text("half")
    live.write_text("in progress")
    users.write_text("a user's file")
    files.write_text(tmp_path / "metrics.jsonl", "ok\n")
    assert not stale.exists() and live.exists() and users.exists()


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_threads_follow_the_cpus_this_process_may_use(tmp_path: Path) -> None:
    """One CPU allowed, one thread: more would oversubscribe it. The count is recorded, so a resume uses it too."""
    command = [sys.executable, "-m", "zoo", *TRAIN, "--max-steps", "2", "--out", str(tmp_path / "run")]
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=lambda: os.sched_setaffinity(0, {0}))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["threads"] == 1
    assert zoo(*TRAIN, "--max-steps", "2", "--threads", "3", "--out", str(tmp_path / "three")).exit_code == 0
    assert json.loads((tmp_path / "three" / "config.json").read_text())["train"]["threads"] == 3
    assert "--threads must be an integer from 1 to 1024" in zoo(*TRAIN, "--threads", "0").stderr


@pytest.mark.slow
def test_one_process_trains_a_run_at_a_time(tmp_path: Path) -> None:
    """Two `zoo train --out DIR` started together: one trains, the other is refused (never both exit 0, one run
    lost); `--resume` of a run another process is training names that process."""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "zoo", *TRAIN, "--epochs", "30", "--out", str(run)]  # long enough to resume
    started = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    first, second = started
    deadline = time.monotonic() + 120
    while not (run / "config.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    resumed = run_zoo("train", "--resume", str(run))
    errors = first.communicate(timeout=300)[1] + second.communicate(timeout=300)[1]
    codes = sorted([first.returncode, second.returncode])
    assert codes == [0, 1], errors
    assert "is being trained by process" in errors or "already holds files" in errors, errors
    assert resumed.returncode == 1 and "is being trained by process" in resumed.stderr, resumed.stderr
    assert json.loads((run / "summary.json").read_text())["test_accuracy"] > 0
