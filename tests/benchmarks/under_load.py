"""Benchmark: training throughput beside CPU-bound competitors, as a fraction of the same setting's idle throughput.

Each setting trains lenet_bn on generated digits for a fixed number of steps (`zoo train ... --json`,
training time only), alone and then beside one busy process per usable CPU, so the machine's load is
twice its cores and a fair share is 50%.  Settings: zoo's default (all usable CPUs; the CLI sets
OpenMP's passive wait policy, so waiting threads sleep), the same with spinning waits, and one thread.
Rounds alternate; figures are medians over rounds.

Run: python tests/benchmarks/under_load.py [--rounds 3] [--steps 60]
Target: loaded throughput >= 40% of idle.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from machine import describe

from zoo.machine import available_cpus


@contextmanager
def competitors(count: int) -> Iterator[None]:
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for process in busy:
            process.kill()
            process.wait()


def images_per_s(threads: int | None, env: dict[str, str], steps: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        args = [sys.executable, "-m", "zoo", "train", "lenet", "sevenseg", "--max-steps", str(steps), "--json",
                "--quiet", "--out", f"{out}/run", *(["--threads", str(threads)] if threads else [])]  # fmt: skip
        done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **env}, check=True)
    return float(json.loads(done.stdout)["history"][0]["images_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    cpus = available_cpus()
    print(describe())
    settings = {
        f"zoo's default ({cpus} threads, waiting threads sleep)": (None, {}),
        f"{cpus} threads, spinning waits (OMP_WAIT_POLICY=ACTIVE)": (None, {"OMP_WAIT_POLICY": "ACTIVE"}),
        "1 thread": (1, {}),
    }
    idle: dict[str, list[float]] = {name: [] for name in settings}
    loaded: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(args.rounds):
        for name, (threads, env) in settings.items():
            idle[name].append(images_per_s(threads, env, args.steps))
            with competitors(cpus):
                loaded[name].append(images_per_s(threads, env, args.steps))
    print(f"{'setting':<48} {'idle img/s':>11} {'loaded img/s':>13} {'loaded/idle':>12}")
    for name in settings:
        ratios = [b / a for a, b in zip(idle[name], loaded[name], strict=True)]
        print(f"{name:<48} {statistics.median(idle[name]):>11,.0f} {statistics.median(loaded[name]):>13,.0f} "
              f"{statistics.median(ratios):>11.0%}  (rounds {', '.join(f'{r:.0%}' for r in ratios)})")  # fmt: skip


if __name__ == "__main__":
    main()
