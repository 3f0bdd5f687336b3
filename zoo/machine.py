"""What machine this is: the CPUs a process may use and the vector features that change speed and rounding."""

from __future__ import annotations

import contextlib
import ctypes
import math
import mmap
import os
import platform
import time
from pathlib import Path

__all__ = ["FEATURES", "available_cpus", "clock_ghz", "cpu", "describe_machine", "flops_per_cycle"]


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


FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve")


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


# x86-64 (System V): rax = 1; then rdi times four dependent `imul rax, rax`; return. Each imul waits 3 cycles for
# the one before it on every x86-64 core since 2011 (Intel Sandy Bridge, AMD Zen), so a call takes 12 cycles per
# iteration: timing it gives the clock the core runs at now, turbo included, which /proc/cpuinfo does not say.
_IMUL_CHAIN = bytes.fromhex("48c7c001000000" + "480fafc0" * 4 + "48ffcf" + "75eb" + "c3")
_CYCLES_PER_ITERATION = 12


def clock_ghz() -> float | None:
    """The core's clock now, in GHz, from a timed chain of dependent multiplies; None off x86-64 Linux, or where
    the system refuses executable memory. A core with faster multiplies reads as faster: an upper bound."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        code = mmap.mmap(-1, len(_IMUL_CHAIN), prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError, AttributeError):
        return None
    try:
        code.write(_IMUL_CHAIN)
        chain = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(code)))
        chain(1000)
        iterations, best = 2_000_000, math.inf
        for _ in range(5):
            start = time.perf_counter()
            chain(iterations)
            best = min(best, time.perf_counter() - start)
        del chain  # the buffer it points into is closed next
        return _CYCLES_PER_ITERATION * iterations / best / 1e9
    finally:
        with contextlib.suppress(BufferError):
            code.close()


def flops_per_cycle(precision: str, features: tuple[str, ...]) -> int:
    """The most arithmetic one core's vector units could do per cycle in ``precision`` (a multiply-add counted as
    two): two fused multiply-add units of the widest vectors its flags list, or its matrix units (AMX). An upper
    bound: cores with one unit, or with 512-bit vectors split in two, do less."""
    lanes = 16 if "avx512f" in features else 8 if {"avx2", "fma"} & set(features) else 4
    float32 = lanes * 2 * 2
    if precision == "bfloat16":
        return 2048 if "amx_bf16" in features else 2 * float32 if "avx512_bf16" in features else float32
    if precision == "int8":
        return 4096 if "amx_int8" in features else 4 * float32
    if precision == "float16":  # without AVX512-FP16 or AMX-FP16, float16 is converted and computed in float32
        return 2048 if "amx_fp16" in features else 2 * float32 if "avx512_fp16" in features else float32
    return float32
