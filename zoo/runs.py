"""Run directories: one per training run, holding its config, metrics, checkpoints, report and plots."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.files import clear_stale

__all__ = ["BEST", "CONFIG", "LAST", "METRICS", "SUMMARY", "create", "find_weights", "newest", "open_run"]

CONFIG = "config.json"
METRICS = "metrics.jsonl"
LAST = "last.safetensors"
BEST = "best.safetensors"
SUMMARY = "summary.json"
DEFAULT_RUNS_DIR = Path("runs")


def create(runs_dir: Path | None, out: Path | None, name: str) -> Path:
    """Make a new, empty run directory: ``out`` itself, or ``runs_dir/name-YYYYmmdd-HHMMSS``.

    An existing, non-empty directory is never reused: that would overwrite a run.
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
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ZooError(f"cannot write run directory {out} ({exc.strerror}); pass --runs-dir or --out DIR") from exc
    return out


def open_run(path: Path) -> dict[str, Any]:
    """The config of an existing run, for resuming it (it may have no checkpoint yet: then it starts again)."""
    if not (path / CONFIG).is_file():
        raise ZooError(f"{path} is not a run directory (no {CONFIG}); give a directory made by `zoo train`")
    try:
        config = json.loads((path / CONFIG).read_text())
        if not isinstance(config, dict) or not isinstance(config.get("train"), dict):
            raise ValueError("no training settings")
    except ValueError as exc:
        raise ZooError(f"{path / CONFIG} is damaged ({exc}); start the run again with `zoo train`") from exc
    return config


def newest(runs_dir: Path, architecture: str | None = None) -> Path | None:
    """The most recent run (by its config's mtime) with a best checkpoint, optionally of one architecture."""
    candidates = []
    for config in runs_dir.glob(f"*/{CONFIG}"):
        if (config.parent / BEST).is_file():
            arch = json.loads(config.read_text()).get("train", {}).get("architecture")
            if architecture is None or arch == architecture:
                candidates.append(config)
    return max(candidates, key=lambda p: p.stat().st_mtime).parent if candidates else None


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
