"""Benchmark: onnxruntime session options per built-in, side by side in alternating rounds: threads, graph
optimisation level, spinning and the memory arena, at batch 1 and 256.

Run: python tests/benchmarks/ort_options.py [--archs NAME ...] [--rounds 5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnxruntime
from machine import describe

import zoo
from zoo.benchmarking import Contender, measure
from zoo.exporting import export
from zoo.machine import available_cpus

LEVELS = {"basic": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "all": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL}  # fmt: skip


def variants(cpus: int) -> dict[str, dict[str, object]]:
    base: dict[str, object] = {"threads": 0, "level": "all", "spinning": True, "arena": True}
    return {
        "default": base,
        f"threads={cpus}": {**base, "threads": cpus},
        "threads=1": {**base, "threads": 1},
        "level=basic": {**base, "level": "basic"},
        "no spinning": {**base, "spinning": False},
        "no arena": {**base, "arena": False},
        f"threads={cpus}, no spinning": {**base, "threads": cpus, "spinning": False},
    }


def session(path: Path, threads: int, level: str, spinning: bool, arena: bool) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = LEVELS[level]
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.enable_cpu_mem_arena = arena
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(zoo.get_registry().architectures))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cpus = available_cpus()
    print(describe())
    for name in args.archs:
        arch = zoo.get_registry().architecture(name)
        with tempfile.TemporaryDirectory() as out:
            path = export(name, ["onnx"], untrained=True, out=out).files["onnx"]
            contenders = []
            for label, settings in variants(cpus).items():
                s = session(path, **settings)  # type: ignore[arg-type]
                contenders.append(Contender(label, "float32", lambda x, s=s: s.run(None, {"input": x})[0]))
            timings = measure(contenders, arch.input_shape, (1, 256), args.rounds, 0.25)
        base = {t.batch: t for t in timings["default"]}
        head = f"{'options':<26} {'batch 1 ms':>10} {'vs default':>10} {'batch 256 img/s':>15} {'vs default':>10}"
        print(f"\n{name}: {head}")
        for label, (one, many) in timings.items():
            print(f"{'':<{len(name) + 1}} {label:<26} {one.median_ms:10.3f} {base[1].median_ms / one.median_ms:9.2f}x "
                  f"{many.images_per_s:15,.0f} {many.images_per_s / base[256].images_per_s:9.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
