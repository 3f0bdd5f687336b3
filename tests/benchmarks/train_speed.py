"""Benchmark: training images/s of each built-in's tutorial loop, zoo's trainer and a bare training step, side by side.

- tutorial: the notebook's loop — a DataLoader over per-image transforms (PIL image, ToTensor, Normalize, as
  torchvision's data sets do), the tutorial recipe's batch size and optimizer, one step per batch;
- zoo: ``zoo.train`` with the default recipe, in float32 and with ``amp=True`` (bfloat16 autocast);
- bare: the same model, optimizer and batch size stepping on one batch already in memory (channels-last, fused
  optimizer), no data handling at all: the ceiling for zoo's step, in float32 and bfloat16 autocast.

Rounds alternate between all of them so that drift in machine speed hits all alike; ratios are medians of the
rounds' ratios.  A float32 matrix-multiply peak, measured in each round, puts training FLOP/s in proportion.
mnist_cnn32 and mnist_cnn6_16 train on MNIST, lenet_bn on FashionMNIST, cifar_seq on CIFAR-10 (the PNG class
folders of cyizhuo/CIFAR-10-dataset under DATA) or, without it, sevenseg_rgb (generated, the same shape).

Run: python tests/benchmarks/train_speed.py --data-dir ../shared/datasets [--cifar-dir ../data] [--rounds 2]
Targets: zoo >= 90% of bare (float32 and amp); zoo/tutorial >= 10x for mnist_cnn6_16, >= 3x for mnist_cnn32
(>= 6x with amp on a CPU with native bfloat16).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from machine import describe
from torch import nn

import zoo
from zoo.summary import summarize
from zoo.training import keep_freed_memory, resolve_config

TARGETS = {"mnist_cnn6_16": (10.0, None), "mnist_cnn32": (3.0, 6.0)}
DATASETS = {"mnist_cnn32": "mnist", "mnist_cnn6_16": "mnist", "lenet_bn": "fashionmnist", "cifar_seq": "cifar10"}


def dataset_for(arch: str, data_dir: str, cifar_dir: str | None) -> tuple[str, str]:
    """(data set, its directory): CIFAR-10 where its files are, else sevenseg_rgb."""
    name = DATASETS[arch]
    if name != "cifar10":
        return name, data_dir
    if cifar_dir and (Path(cifar_dir) / "CIFAR-10-dataset").is_dir():
        return name, cifar_dir
    return "sevenseg_rgb", data_dir


class PerImage(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """The notebooks' data path: one PIL image at a time through ToTensor and Normalize."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]):
        from torchvision import transforms

        self.images, self.labels = images, labels
        self.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        pixels = self.images[i].permute(1, 2, 0).squeeze(-1).numpy()
        return self.transform(Image.fromarray(pixels)), int(self.labels[i])


def tutorial_images_per_s(arch: str, split: tuple[torch.Tensor, torch.Tensor], ds: Any, batches: int) -> float:
    """The tutorial's loop, timed over ``batches`` steps after a short warm-up."""
    recipe = zoo.get_registry().architecture(arch).tutorial_recipe
    assert recipe is not None
    loader = torch.utils.data.DataLoader(PerImage(*split, ds.mean, ds.std), batch_size=recipe.batch_size, shuffle=True)
    torch.manual_seed(42)
    model = zoo.get_registry().architecture(arch).build(ds.shape, ds.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    criterion = nn.CrossEntropyLoss()
    start, seen = 0.0, 0
    for i, (x, y) in enumerate(loader):
        if i == 10:  # warm-up done
            start, seen = time.perf_counter(), 0
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        seen += len(y)
        if i == 10 + batches:
            break
    return seen / (time.perf_counter() - start)


def zoo_images_per_s(arch: str, dataset: str, data_dir: str, images: int, amp: bool) -> float:
    """zoo's trainer with the architecture's default recipe, on ``images`` training images for one epoch."""
    with tempfile.TemporaryDirectory() as out:
        result = zoo.train(arch, dataset, data_dir=data_dir, out=Path(out) / "run", epochs=1, limit=images,
                           val_split=0.0, progress="none", amp=amp)  # fmt: skip
    return float(result.history[0]["images_per_s"])


def bare_images_per_s(arch: str, ds: Any, amp: bool, seconds: float = 3.0) -> float:
    """The default recipe's model and optimizer stepping on one batch in memory: no data handling at all."""
    architecture = zoo.get_registry().architecture(arch)
    config = resolve_config(architecture, ds)
    torch.manual_seed(0)
    model = architecture.build(ds.shape, ds.num_classes).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, fused=True)
    x = torch.randn(config.batch_size, *ds.shape).to(memory_format=torch.channels_last)
    y = torch.randint(0, ds.num_classes, (config.batch_size,))
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        count += 1
    return count * config.batch_size / (time.perf_counter() - start)


def matmul_flops(seconds: float = 2.0, n: int = 1024) -> float:
    """Float32 matrix-multiply FLOP/s on the current threads: the practical peak of this CPU."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="where MNIST/raw/ and FashionMNIST/raw/ are")
    parser.add_argument("--cifar-dir", help="the folder holding CIFAR-10-dataset/ (PNG class folders)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=10_000, help="training images per zoo measurement")
    parser.add_argument("--archs", nargs="+", default=list(DATASETS))
    args = parser.parse_args()
    keep_freed_memory()  # as `zoo train` does
    torch.set_num_threads(args.threads)
    print(describe())
    print(f"{args.rounds} alternating rounds; --amp is bfloat16 autocast")

    kinds = ("tutorial", "zoo", "zoo_amp", "bare", "bare_amp", "peak")
    results: dict[str, dict[str, list[float]]] = {a: {k: [] for k in kinds} for a in args.archs}
    sets = {a: dataset_for(a, args.data_dir, args.cifar_dir) for a in args.archs}
    for r in range(args.rounds):
        for arch in args.archs:
            name, root = sets[arch]
            ds = zoo.get_registry().dataset(name)
            split = ds.load("train", Path(root), download=False)
            got = results[arch]
            got["peak"].append(matmul_flops())
            got["tutorial"].append(tutorial_images_per_s(arch, split, ds, batches=200))
            got["zoo"].append(zoo_images_per_s(arch, name, root, args.images, amp=False))
            got["bare"].append(bare_images_per_s(arch, ds, amp=False))
            got["zoo_amp"].append(zoo_images_per_s(arch, name, root, args.images, amp=True))
            got["bare_amp"].append(bare_images_per_s(arch, ds, amp=True))
            speeds = ", ".join(f"{k} {v[-1]:,.0f}" for k, v in got.items() if k != "peak")
            print(f"round {r + 1} {arch} on {name}: {speeds} img/s", flush=True)

    def ratio(a: list[float], b: list[float]) -> float:
        return statistics.median(x / y for x, y in zip(a, b, strict=True))

    print(
        f"\n{'architecture':<14} {'data':<13} {'tutorial':>9} {'zoo':>8} {'bare':>8} {'zoo/bare':>8} "
        f"{'zoo/tut':>8} {'zoo amp':>8} {'bare amp':>8} {'amp/bare':>8} {'amp/tut':>8}  float32 peak"
    )
    for arch in args.archs:
        got, (name, _) = results[arch], sets[arch]
        ds = zoo.get_registry().dataset(name)
        model = zoo.get_registry().architecture(arch).build(ds.shape, ds.num_classes)
        flop = 6 * sum(layer.macs for layer in summarize(model, ds.shape))  # forward and backward, per image
        use = statistics.median(z * flop / f for z, f in zip(got["zoo"], got["peak"], strict=True))
        print(
            f"{arch:<14} {name:<13} {statistics.median(got['tutorial']):9,.0f} {statistics.median(got['zoo']):8,.0f} "
            f"{statistics.median(got['bare']):8,.0f} {ratio(got['zoo'], got['bare']):8.0%} "
            f"{ratio(got['zoo'], got['tutorial']):7.1f}x {statistics.median(got['zoo_amp']):8,.0f} "
            f"{statistics.median(got['bare_amp']):8,.0f} {ratio(got['zoo_amp'], got['bare_amp']):8.0%} "
            f"{ratio(got['zoo_amp'], got['tutorial']):7.1f}x  {use:.0%} of {statistics.median(got['peak']) / 1e9:.0f}"
            f" GFLOP/s"
        )
    print("\ntargets: zoo/bare >= 90% in float32 and amp; " + "; ".join(
        f"{a} zoo/tut >= {f:g}x" + (f", amp/tut >= {b:g}x on native bfloat16" if b else "")
        for a, (f, b) in TARGETS.items()))  # fmt: skip


if __name__ == "__main__":
    main()
