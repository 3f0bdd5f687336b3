"""What machine this is: the CPUs a process may use and the vector features that change speed and rounding."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path

__all__ = ["FEATURES", "available_cpus", "cpu", "describe_machine"]


def available_cpus() -> int:
    """The CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (as containers set).

    More threads than that oversubscribe the cores, and OpenMP threads waiting on one another at every
    operation then slow a training step by an order of magnitude.
    """
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    for quota_file, period_file in (
        ("/sys/fs/cgroup/cpu.max", None),  # cgroup v2: "QUOTA PERIOD" or "max PERIOD"
        ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
    ):
        try:
            fields = Path(quota_file).read_text().split()
            if period_file:
                fields.append(Path(period_file).read_text().strip())
            quota, period = int(fields[0]), int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
        if quota > 0 and period > 0:
            count = min(count, math.ceil(quota / period))
        break
    return max(1, count)


FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "asimd", "sve")


def cpu() -> tuple[str, tuple[str, ...]]:
    """The CPU's model name and which of the vector features that change speed and rounding it has."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() in ("flags", "Features"):
                    flags = set(value.split())
    except OSError:
        pass
    return model, tuple(f for f in FEATURES if f in flags)


def describe_machine(threads: int) -> str:
    """The CPU's model, which vector features it has (they change both speed and rounding), and the thread count."""
    model, features = cpu()
    has = ", ".join(features) or "no listed vector features"
    return f"{platform.system()} {platform.machine()}, {model} ({has}), {threads} thread{'s' * (threads != 1)}"
