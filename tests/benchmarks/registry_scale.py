"""Benchmark: what a plugin registering many items costs every command.  Registers N architectures (each with an
alias) from one plugin, then resolves one name, as a command would; prints the time per N and the ratio of the
largest N's time to the smallest's, next to the ratio of the Ns (linear: about equal).

Run: python tests/benchmarks/registry_scale.py [--sizes 1000 10000]
Target: 10,000 architectures registered and one resolved in at most 1 s.
"""

from __future__ import annotations

import argparse
import time

from machine import describe

import zoo
from zoo.registry import Plugin, Registry

TARGET_S = 1.0


def register(n: int) -> float:
    start = time.perf_counter()
    registry, plugin = Registry(), Plugin("many", "zoo-many", "1.0", "many")
    for i in range(n):
        registry.add(zoo.Architecture(f"net{i}", builder="x:y", summary="one of many", aliases=(f"n{i}",)), plugin)
    registry.architecture(f"n{n - 1}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    print(describe())
    times = {n: min(register(n) for _ in range(3)) for n in args.sizes}
    for n, seconds in times.items():
        print(f"{n:>7,} architectures: {seconds * 1000:8.1f} ms")
    small, large = min(times), max(times)
    print(f"time ratio {times[large] / times[small]:.1f}x for {large / small:.0f}x the items")
    print(f"{large:,}: {times[large]:.3f} s, {times[large] / TARGET_S:.0%} of the {TARGET_S:g} s target")


if __name__ == "__main__":
    main()
