"""What machine a benchmark ran on: CPU model, the vector features that change its speed, cores and versions."""

from __future__ import annotations

import os
import platform

FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "asimd", "sve")


def describe() -> str:
    """One line: CPU model, which of FEATURES it has, usable cores, torch and onnxruntime versions."""
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
    has = [f for f in FEATURES if f in flags]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    import onnxruntime
    import torch

    return (f"{model}; {', '.join(has) or 'no listed vector features'}; {cores} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), onnxruntime {onnxruntime.__version__}")  # fmt: skip
