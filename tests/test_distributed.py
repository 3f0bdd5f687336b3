"""Training in several processes through real torchrun (gloo on localhost, one thread each)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from zoo import checkpoint

# An architecture without dropout or batch norm: nothing random differs between the processes, nor statistics.
SMALL = ["train", "cnn6", "sevenseg", "--batch-size", "64", "--augment", "none", "--threads", "1", "--quiet"]


def zoo(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ZOO_", "TORCHELASTIC_"))}
    return subprocess.run(
        [sys.executable, "-m", "zoo", *args], capture_output=True, text=True, cwd=cwd, env={**clean, **(env or {})}
    )


def weights(run: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(run / "last.safetensors").weights


@pytest.mark.slow
@pytest.mark.parametrize(
    "regularisers",
    [[], ["--augment", "crop_erase", "--label-smoothing", "0.1", "--ema", "0.9"]],
    ids=["plain", "crop_erase-smoothing-ema"],
)
def test_two_processes_compute_what_one_does_at_the_same_global_batch(regularisers: list[str], tmp_path: Path) -> None:
    """Augmentation is drawn for the whole batch, each process taking its slice: with it on, too, two processes
    train the weights (and their moving average) that one does."""
    steps = [*SMALL, "--limit", "512", "--val-split", "0", "--epochs", "1", "--max-steps", "6", *regularisers]
    one = zoo(*steps, "--out", "one", cwd=tmp_path)
    two = zoo(*steps, "--out", "two", "--nproc-per-node", "2", cwd=tmp_path)
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    for kept in ("last.safetensors", "best.safetensors"):
        a, b = (checkpoint.load(tmp_path / run / kept).weights for run in ("one", "two"))
        assert a.keys() == b.keys()
        for name in a:  # the same sums, split over two processes: float32 rounding apart, no more
            torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=f"{kept}: {name}")
    first = json.loads((tmp_path / "one" / "metrics.jsonl").read_text())
    second = json.loads((tmp_path / "two" / "metrics.jsonl").read_text())
    assert first["train_acc"] == second["train_acc"], "accuracy counts are summed over the processes"
    assert first["train_loss"] == pytest.approx(second["train_loss"], rel=1e-5)
    # Rank 0 alone reports and writes.
    assert two.stdout.count("run: two") == 1 and two.stderr.count("epoch 1/1") == 1


@pytest.mark.slow
def test_sigterm_stops_every_process_at_one_step_and_another_count_resumes(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "zoo", *SMALL, "--epochs", "30", "--out", "run", "--nproc-per-node", "2"]
    with subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True) as launcher:
        assert launcher.stderr is not None
        deadline = time.monotonic() + 120
        while "epoch 1/30" not in launcher.stderr.readline():  # the first epoch is saved: stop in the second
            assert time.monotonic() < deadline and launcher.poll() is None
        launcher.send_signal(signal.SIGTERM)
        rest = launcher.stderr.read()
        assert launcher.wait(60) == 130
    assert rest.count("zoo: stopped by SIGTERM at epoch") == 1 and "continue with: zoo train --resume run" in rest
    progress = checkpoint.load(tmp_path / "run" / "last.safetensors").resume["progress"]  # type: ignore[index]
    assert progress["epoch"] >= 1 and not (tmp_path / "run" / "summary.json").exists()

    # One process takes over from two: the global batch, and so the order of the images, stays the same.
    resumed = zoo("train", "--resume", "run", "--quiet", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    history = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(history) == 30 and (tmp_path / "run" / "summary.json").is_file()


@pytest.mark.slow
def test_a_restart_by_torchrun_continues_the_run_it_names(tmp_path: Path) -> None:
    first = zoo(*SMALL, "--epochs", "2", "--max-steps", "5", "--out", "run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    restarted = {"RANK": "0", "WORLD_SIZE": "1", "TORCHELASTIC_RESTART_COUNT": "1"}
    again = zoo(*SMALL, "--epochs", "2", "--max-steps", "5", "--out", "run", cwd=tmp_path, env=restarted)
    assert again.returncode == 0 and "is complete" in again.stderr, again.stderr
    fresh = zoo(*SMALL, "--epochs", "2", "--max-steps", "5", "--out", "run", cwd=tmp_path)
    assert fresh.returncode == 1 and "run" in fresh.stderr, "without a restart, a run is never overwritten"


@pytest.mark.slow
def test_a_batch_that_does_not_split_over_the_processes_is_refused(tmp_path: Path) -> None:
    result = zoo(*SMALL, "--batch-size", "63", "--nproc-per-node", "2", "--out", "run", cwd=tmp_path)
    assert result.returncode == 1
    assert "--batch-size 63 does not split evenly over 2 processes; give a multiple of 2" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()
