"""Re-run the recorded `zoo train` command of published weights and compare the result with the file, bit for bit.

    python tests/benchmarks/reproduce_weights.py --data-dir ../shared/datasets            # the MNIST weights
    python tests/benchmarks/reproduce_weights.py --data-dir DIR mnist_cnn6_16:mnist ...   # chosen ones

Bit-identical weights need the machine the record names (the same CPU features and thread count: vector
widths change how sums round); elsewhere the script reports how far apart the tensors are.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from zoo import checkpoint
from zoo.loader import get_registry
from zoo.machine import available_cpus, describe_machine
from zoo.weights import fetch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="ARCH:TAG names [default: every published weight trained on MNIST]")
    parser.add_argument("--data-dir", required=True, help="Where the data sets are stored.")
    args = parser.parse_args()
    registry = get_registry()
    chosen = [registry.weights[n] for n in args.names] or [w for w in registry.weights.values() if w.dataset == "mnist"]
    print(f"this machine: {describe_machine(available_cpus())}")
    zoo_command = Path(sys.executable).with_name("zoo")
    for w in chosen:
        print(f"\n{w.name}: recorded on {w.machine}, {w.accuracy:.2%}, {w.train_seconds:.0f} s of training")
        print(f"  {w.command}")
        with tempfile.TemporaryDirectory() as tmp:
            command = [str(zoo_command), *shlex.split(w.command)[1:], "--data-dir", args.data_dir,
                       "--out", f"{tmp}/run", "--quiet"]  # fmt: skip
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            seconds = time.perf_counter() - start
            ours = checkpoint.load(Path(tmp) / "run" / "best.safetensors").weights
        theirs = checkpoint.load(fetch(w)).weights
        differing = [k for k in theirs if not torch.equal(theirs[k], ours[k])]
        if not differing:
            print(f"  bit-identical: all {len(theirs)} tensors ({seconds:.0f} s for the command)")
        else:
            worst = max(float((theirs[k].float() - ours[k].float()).abs().max()) for k in differing)
            print(f"  DIFFERENT: {len(differing)} of {len(theirs)} tensors, largest difference {worst:.3g} "
                  f"({seconds:.0f} s for the command)")  # fmt: skip


if __name__ == "__main__":
    main()
