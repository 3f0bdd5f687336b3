"""Benchmark: mnist_cnn6_16's default recipe on real MNIST in one process and in two (torchrun, gloo), side by side.

The two-process run keeps the global batch, so it sees the same images in the same order; its augmentation draws
differ (they are a function of the rank too), so its accuracy may differ a little: the target is within 0.2 points.
On a 2-core machine each process gets one core: the time ratio says what the gloo all-reduce costs, not a speed-up.

Run: python tests/benchmarks/distributed_accuracy.py --data-dir ../shared/datasets [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe


def train(data_dir: str, seed: int, out: Path, nproc: int) -> tuple[float, float]:
    """(test accuracy, wall seconds) of one `zoo train` run."""
    command = [sys.executable, "-m", "zoo", "train", "cnn6", "mnist", "--data-dir", data_dir, "--seed", str(seed),
               "--out", str(out), "--quiet", "--json"]  # fmt: skip
    if nproc > 1:
        command += ["--nproc-per-node", str(nproc)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    return json.loads(done.stdout)["test_accuracy"], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    print(describe())
    print(f"{'seed':>4} {'1 process':>10} {'2 processes':>12} {'difference':>11} {'time 2/1':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            one, t1 = train(args.data_dir, seed, Path(tmp) / f"one{seed}", 1)
            two, t2 = train(args.data_dir, seed, Path(tmp) / f"two{seed}", 2)
            mark = "ok" if abs(two - one) <= 0.002 else "MISSED (target: within 0.2 points)"
            print(f"{seed:>4} {one:>10.2%} {two:>12.2%} {100 * (two - one):>+10.2f}pt {t2 / t1:>8.2f}x  {mark}")


if __name__ == "__main__":
    main()
