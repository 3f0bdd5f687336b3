"""Benchmark: does ``--amp`` (bfloat16 autocast) cost accuracy?  Final test accuracy and training time of the
default recipe in float32 and with amp, per seed, for the MNIST nets.

Run: python tests/benchmarks/amp_accuracy.py --data-dir ../shared/datasets [--seeds 0 1] [--archs NAME ...]
Target: amp within 0.1 point of float32's final test accuracy, seed for seed, for mnist_cnn6_16 and mnist_cnn32.
Worth running only on a CPU with native bfloat16 (avx512_bf16 or amx_bf16); elsewhere autocast emulates it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from machine import describe

import zoo
from zoo.training import keep_freed_memory

TOLERANCE = 0.001  # 0.1 point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--archs", nargs="+", default=["mnist_cnn6_16", "mnist_cnn32"])
    args = parser.parse_args()
    keep_freed_memory()  # as `zoo train` does
    print(describe())
    print(f"{'architecture':<14} {'seed':>4} {'float32':>8} {'amp':>8} {'change':>8} {'time amp/f32':>12}  verdict")
    for arch in args.archs:
        changes = []
        for seed in args.seeds:
            results = {}
            for amp in (False, True):
                with tempfile.TemporaryDirectory() as out:
                    results[amp] = zoo.train(arch, "mnist", data_dir=args.data_dir, out=Path(out) / "run", seed=seed,
                                             amp=amp, threads=2, progress="none").summary()  # fmt: skip
            f32, amp16 = results[False], results[True]
            change = amp16["test_accuracy"] - f32["test_accuracy"]
            changes.append(change)
            verdict = "ok" if change >= -TOLERANCE else "MISSED"
            print(f"{arch:<14} {seed:4} {f32['test_accuracy']:8.2%} {amp16['test_accuracy']:8.2%} "
                  f"{change * 100:+7.2f}pt {amp16['train_seconds'] / f32['train_seconds']:11.2f}x  {verdict}",
                  flush=True)  # fmt: skip
        print(f"{arch:<14} mean change {statistics.mean(changes) * 100:+.2f} pt over seeds {args.seeds}")
    print(f"bfloat16 kernels: {'native' if torch.ops.mkldnn._is_mkldnn_bf16_supported() else 'emulated'}")


if __name__ == "__main__":
    main()
