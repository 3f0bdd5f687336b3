"""Benchmark: test accuracy and cumulative training time per epoch of zoo's default recipes on real MNIST.

Beside it, the tutorial loop's seconds per epoch, measured in the same run (on 500 batches of
10 and scaled to the epoch, as the whole epoch takes minutes).  The test split is only
reported here: training chooses nothing by it.

Run: python tests/benchmarks/time_to_accuracy.py --data-dir ../shared/datasets [--seeds 0 1]
Targets: mnist_cnn6_16 >= 99.0% by epoch 5; mnist_cnn32 >= 99.0% by epoch 3 and >= 99.3% at the end.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn
from train_speed import tutorial_images_per_s

import zoo
from zoo.data import Normalizer, Split
from zoo.evaluation import score
from zoo.training import keep_freed_memory

TARGETS = {"mnist_cnn6_16": [(5, 0.990)], "mnist_cnn32": [(3, 0.990), (None, 0.993)]}
TUTORIAL_TRAIN_IMAGES = {"mnist_cnn6_16": 60_000, "mnist_cnn32": 48_000}


def run(arch: str, seed: int, data_dir: str, overrides: dict[str, Any]) -> list[tuple[int, float, float]]:
    """(epoch, test accuracy, cumulative training seconds) for each epoch of one run."""
    registry = zoo.get_registry()
    mnist = registry.dataset("mnist")
    test = Split(*mnist.load("test", Path(data_dir)))
    normalize = Normalizer(mnist.mean, mnist.std, torch.device("cpu"), channels_last=True)
    rows: list[tuple[int, float, float]] = []

    def on_epoch(record: dict[str, Any], model: nn.Module) -> None:
        seconds = (rows[-1][2] if rows else 0.0) + record["seconds"]
        rows.append((record["epoch"], score(model, test, normalize).accuracy, seconds))

    with tempfile.TemporaryDirectory() as out:
        zoo.train(arch, "mnist", data_dir=data_dir, out=Path(out) / "run", seed=seed, progress="none",
                  on_epoch=on_epoch, **overrides)  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--archs", nargs="+", default=["mnist_cnn6_16", "mnist_cnn32"])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override recipe settings")
    args = parser.parse_args()
    keep_freed_memory()  # as `zoo train` does
    torch.set_num_threads(2)
    overrides = {k: type(getattr(zoo.Recipe(), k))(v) for k, v in (s.split("=") for s in args.set)}
    for arch in args.archs:
        recipe = zoo.get_registry().architecture(arch).default_recipe
        mnist = zoo.get_registry().dataset("mnist")
        split = mnist.load("train", Path(args.data_dir), download=False)
        tutorial_epoch = TUTORIAL_TRAIN_IMAGES[arch] / tutorial_images_per_s(arch, split, mnist, batches=500)
        print(f"\n{arch}: default recipe {recipe.describe()} {overrides or ''}")
        print(f"tutorial loop: {tutorial_epoch:.0f} s per epoch (same run)")
        for seed in args.seeds:
            rows = run(arch, seed, args.data_dir, overrides)
            print(f"seed {seed}: " + "  ".join(f"e{e} {acc:.2%} {s:.0f}s" for e, acc, s in rows))
            for epoch, threshold in TARGETS.get(arch, []):
                e, acc, s = rows[-1] if epoch is None else rows[min(epoch, len(rows)) - 1]
                verdict = "ok" if acc >= threshold else "MISSED"
                print(f"  target {threshold:.1%} by epoch {e}: {acc:.2%} {verdict} ({s:.0f} s of training, "
                      f"{s / tutorial_epoch:.2f} tutorial epochs)")  # fmt: skip


if __name__ == "__main__":
    main()
