"""Benchmark: start-up time of `zoo --help` and `zoo list` beside `import torch`, measured alternately in one run.

Run: python tests/benchmarks/cli_speed.py [--rounds 15]
Targets: `zoo --help` <= 0.3 s and `zoo list` <= 1.0 s.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "zoo --help": [sys.executable, "-m", "zoo", "--help"],
    "zoo list": [sys.executable, "-m", "zoo", "list"],
    "zoo plugins": [sys.executable, "-m", "zoo", "plugins"],
    "import torch": [sys.executable, "-c", "import torch"],
    "import torchvision": [sys.executable, "-c", "import torchvision"],
}
TARGETS = {"zoo --help": 0.3, "zoo list": 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    if shutil.which("zoo") is None:
        print("note: `zoo` is not on PATH; timing `python -m zoo`, which is the same code")
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):  # alternate so that machine noise hits every command alike
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    torch_median = statistics.median(times["import torch"])
    print(f"{'command':<20} {'median s':>9} {'min s':>7} {'x import torch':>15}  target")
    for name, samples in times.items():
        median = statistics.median(samples)
        target = TARGETS.get(name)
        verdict = "" if target is None else f"<= {target} s: {'ok' if median <= target else 'MISSED'}"
        print(f"{name:<20} {median:9.3f} {min(samples):7.3f} {median / torch_median:15.2f}  {verdict}")


if __name__ == "__main__":
    main()
