"""Run directories: one per training run, holding its config, metrics, checkpoints, report and plots."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.files import clear_stale, read_json, writable_dir

__all__ = [
    "BEST",
    "CONFIG",
    "LAST",
    "METRICS",
    "SUMMARY",
    "create",
    "describe",
    "find_weights",
    "lock",
    "newest",
    "open_run",
    "recorded_data_dir",
]

CONFIG = "config.json"
METRICS = "metrics.jsonl"
LAST = "last.safetensors"
BEST = "best.safetensors"
SUMMARY = "summary.json"
DEFAULT_RUNS_DIR = Path("runs")


def _holder(path: Path) -> str:
    """The process holding the lock on ``path``, from /proc/locks where there is one."""
    info = os.stat(path)
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "FLOCK" in fields and device in fields:
                return f"process {fields[fields.index(device) - 1]}"
    return "another process"


def lock(path: Path, hold: contextlib.ExitStack) -> None:
    """Claim the run directory ``path`` for this process until ``hold`` closes, or say which process has it.

    An advisory ``flock`` on the directory itself, so no file is left behind: the kernel releases it when the
    process ends, however it ends.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ZooError(
            f"run {path} is being trained by {_holder(path)}; wait for it to finish (or stop it), or give another --out"
        ) from None
    hold.callback(os.close, fd)


def create(runs_dir: Path | None, out: Path | None, name: str, hold: contextlib.ExitStack) -> Path:
    """Make a new, empty run directory, ``out`` itself or ``runs_dir/name-YYYYmmdd-HHMMSS``, locked until ``hold``
    closes.

    An existing directory with files is never reused: that would overwrite a run.  Two processes given the same
    directory at once: one gets it, the other is told which process has it.
    """
    if out is None:
        base = (runs_dir or DEFAULT_RUNS_DIR) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        out, n = base, 1
        while out.exists():
            n += 1
            out = base.with_name(f"{base.name}-{n}")
    if out.exists():
        clear_stale(out)  # what a killed run left before its first file landed is no run to protect
    if out.exists() and any(out.iterdir()):
        raise ZooError(f"{out} already holds files; give a new --out, or --resume {out} to continue that run")
    writable_dir(out, "pass --runs-dir or --out DIR")
    lock(out, hold)
    if any(out.iterdir()):  # another process claimed it and wrote in between
        raise ZooError(f"{out} already holds files; give a new --out, or --resume {out} to continue that run")
    return out


def open_run(path: Path) -> dict[str, Any]:
    """The config of an existing run, for resuming it (it may have no checkpoint yet: then it starts again)."""
    if not (path / CONFIG).exists():
        raise ZooError(f"{path} is not a run directory (no {CONFIG}); give a directory made by `zoo train`")
    try:
        config = read_json(path / CONFIG)
    except ZooError as exc:
        raise ZooError(f"{exc}; start the run again with `zoo train`") from None
    if not isinstance(config, dict) or not isinstance(config.get("train"), dict):
        raise ZooError(f"{path / CONFIG} is damaged (no training settings); start the run again with `zoo train`")
    return config


def recorded_data_dir(run: Path) -> Path | None:
    """The ``--data-dir`` a run was trained with, from its config.json: a hint for reading data that is there,
    never a place to write."""
    try:
        given = read_json(run / CONFIG).get("data_dir") if (run / CONFIG).exists() else None
    except (ZooError, AttributeError):
        return None
    return Path(given) if isinstance(given, str) and Path(given).is_dir() else None


def newest(runs_dir: Path, architecture: str | None = None) -> Path | None:
    """The most recent run (by its config's mtime) with a best checkpoint, optionally of one architecture."""
    candidates = []
    for config in runs_dir.glob(f"*/{CONFIG}"):
        if (config.parent / BEST).is_file():
            try:
                arch = read_json(config).get("train", {}).get("architecture")
            except (ZooError, AttributeError):
                continue  # not a run zoo can read: never the newest
            if architecture is None or arch == architecture:
                candidates.append(config)
    return max(candidates, key=lambda p: p.stat().st_mtime).parent if candidates else None


def describe(run: Path) -> str:
    """What a run came to, in a few words, from its own files: its test accuracy and length, or that it is not
    finished (a 60-step ``--max-steps`` smoke test should not pass for a trained model)."""
    try:
        summary = read_json(run / SUMMARY)
        settings = read_json(run / CONFIG)["train"]
        accuracy, epochs = float(summary["test_accuracy"]), int(summary["epochs"])
    except (ZooError, KeyError, TypeError, ValueError):
        return "not finished: no test accuracy yet"
    steps = f", stopped at --max-steps {settings['max_steps']}" if settings.get("max_steps") else ""
    return f"{accuracy:.2%} test accuracy on {settings.get('dataset')}, {epochs} epoch(s){steps}"


def find_weights(path: Path) -> Path:
    """A weights file given directly, or a run directory's best checkpoint."""
    if path.is_dir():
        for name in (BEST, LAST):
            if (path / name).is_file():
                return path / name
        raise ZooError(f"{path} holds no checkpoint ({BEST} or {LAST}); train first with `zoo train`")
    if not path.is_file():
        raise ZooError(f"{path} does not exist; give a run directory or a .safetensors file")
    return path
