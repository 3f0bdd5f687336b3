"""Benchmark: zoo's training images/s with each regulariser on, against the same run without and the bare step.

For each architecture, in alternating rounds: ``zoo.train`` for one epoch of the default recipe on ``--images``
training images, once per setting (no augmentation; each ``--augment`` preset; label smoothing; a moving average of
the weights), and the bare step of tests/benchmarks/train_speed.py (the model stepping on one batch in memory).
Ratios are medians of the rounds' ratios. Target: every setting >= 90% of the bare step.

Run: python tests/benchmarks/augment_speed.py --data-dir ../shared/datasets [--cifar-dir ../data] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
from machine import describe
from train_speed import bare_images_per_s, dataset_for

import zoo
from zoo.training import keep_freed_memory

SETTINGS: dict[str, dict[str, Any]] = {
    "none": {"augment": "none"},
    "crop": {"augment": "crop"},
    "crop_flip": {"augment": "crop_flip"},
    "affine": {"augment": "affine"},
    "erase": {"augment": "erase"},
    "crop_flip_erase": {"augment": "crop_flip_erase"},
    "smoothing": {"augment": "none", "label_smoothing": 0.1},
    "ema": {"augment": "none", "ema": 0.999},
}


def zoo_images_per_s(arch: str, dataset: str, data_dir: str, images: int, options: dict[str, Any]) -> float:
    with tempfile.TemporaryDirectory() as out:
        result = zoo.train(arch, dataset, data_dir=data_dir, out=Path(out) / "run", epochs=1, limit=images,
                           val_split=0.0, progress="none", **options)  # fmt: skip
    return float(result.history[0]["images_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="where MNIST/raw/ and FashionMNIST/raw/ are")
    parser.add_argument("--cifar-dir", help="the folder holding CIFAR-10-dataset/ (PNG class folders)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--archs", nargs="+", default=["mnist_cnn32", "cifar_seq"])
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    print(describe())
    got: dict[str, dict[str, list[float]]] = {a: {s: [] for s in [*SETTINGS, "bare"]} for a in args.archs}
    for r in range(args.rounds):
        for arch in args.archs:
            name, root = dataset_for(arch, args.data_dir, args.cifar_dir)
            ds = zoo.get_registry().dataset(name)
            got[arch]["bare"].append(bare_images_per_s(arch, ds, amp=False))
            for setting, options in SETTINGS.items():
                got[arch][setting].append(zoo_images_per_s(arch, name, root, args.images, options))
            print(f"round {r + 1} {arch} on {name}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in got[arch].items()),
                  flush=True)  # fmt: skip

    def ratio(a: list[float], b: list[float]) -> float:
        return statistics.median(x / y for x, y in zip(a, b, strict=True))

    print(f"\n{'architecture':<14} {'setting':<16} {'img/s':>8} {'/ none':>7} {'/ bare':>7}")
    for arch in args.archs:
        for setting in SETTINGS:
            runs = got[arch][setting]
            print(f"{arch:<14} {setting:<16} {statistics.median(runs):8,.0f} {ratio(runs, got[arch]['none']):7.0%} "
                  f"{ratio(runs, got[arch]['bare']):7.0%}")  # fmt: skip
        print(f"{arch:<14} {'bare step':<16} {statistics.median(got[arch]['bare']):8,.0f}")
    print("\ntarget: every setting >= 90% of the bare step")


if __name__ == "__main__":
    main()
