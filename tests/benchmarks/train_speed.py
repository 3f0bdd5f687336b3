"""Benchmark: training images/s of the tutorial loop against zoo's trainer, side by side in one run.

The tutorial loop is the notebooks' own: a DataLoader over torchvision's MNIST with
ToTensor(), batch size 10, Adam at 1e-3, one optimizer step per batch.  zoo's trainer
runs its default recipe.  Rounds alternate between the two so that drift in machine
speed hits both alike; the ratio reported is the median of the rounds' ratios.  A
float32 matrix-multiply peak on the same threads, measured in each round, puts
mnist_cnn32's training FLOP/s in proportion.

Run: python tests/benchmarks/train_speed.py --data-dir ../shared/datasets [--rounds 3]
Targets: zoo/tutorial >= 10x for mnist_cnn6_16, >= 3x for mnist_cnn32; cnn32 >= 70% of the matmul peak.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import zoo
from zoo.summary import summarize
from zoo.training import keep_freed_memory

TARGETS = {"mnist_cnn6_16": 10.0, "mnist_cnn32": 3.0}


def tutorial_images_per_s(arch: str, data_dir: str, batches: int) -> float:
    """The notebooks' loop, timed over ``batches`` steps after a short warm-up."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    train_set = datasets.MNIST(data_dir, train=True, download=False, transform=transforms.ToTensor())
    loader = DataLoader(train_set, batch_size=10, shuffle=True)
    torch.manual_seed(42)
    model = zoo.get_registry().architecture(arch).build()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    start, seen = 0.0, 0
    for i, (x, y) in enumerate(loader):
        if i == 20:  # warm-up done
            start, seen = time.perf_counter(), 0
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        seen += len(y)
        if i == 20 + batches:
            break
    return seen / (time.perf_counter() - start)


def zoo_images_per_s(arch: str, data_dir: str, images: int) -> float:
    """zoo's trainer with the architecture's default recipe, on ``images`` training images for one epoch."""
    with tempfile.TemporaryDirectory() as out:
        result = zoo.train(arch, "mnist", data_dir=data_dir, out=Path(out) / "run", epochs=1, limit=images,
                           val_split=0.0, progress="none")  # fmt: skip
    return float(result.history[0]["images_per_s"])


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
    parser.add_argument("--data-dir", required=True, help="where MNIST/raw/ is, e.g. ../shared/datasets")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--archs", nargs="+", default=["mnist_cnn6_16", "mnist_cnn32"])
    args = parser.parse_args()
    keep_freed_memory()  # as `zoo train` does
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} alternating rounds")

    results: dict[str, dict[str, list[float]]] = {a: {"tutorial": [], "zoo": [], "peak": []} for a in args.archs}
    for r in range(args.rounds):
        for arch in args.archs:
            results[arch]["peak"].append(matmul_flops())
            results[arch]["tutorial"].append(tutorial_images_per_s(arch, args.data_dir, batches=300))
            results[arch]["zoo"].append(zoo_images_per_s(arch, args.data_dir, images=15_000))
            print(f"round {r + 1} {arch}: tutorial {results[arch]['tutorial'][-1]:,.0f} img/s, "
                  f"zoo {results[arch]['zoo'][-1]:,.0f} img/s", flush=True)  # fmt: skip

    # Each round measures both loops side by side, so its ratio cancels the machine's drift: report their median.
    print(f"\n{'architecture':<15} {'tutorial img/s':>15} {'zoo img/s':>10} {'ratio':>7} {'target':>7}  peak use")
    for arch in args.archs:
        tutorial, mine, peak = results[arch]["tutorial"], results[arch]["zoo"], results[arch]["peak"]
        ratio = statistics.median(z / t for z, t in zip(mine, tutorial, strict=True))
        recipe = zoo.get_registry().architecture(arch).default_recipe
        flop_per_image = 6 * sum(layer.macs for layer in summarize(zoo.get_registry().architecture(arch).build(),
                                                                   (1, 28, 28)))  # fmt: skip
        use = statistics.median(z * flop_per_image / f for z, f in zip(mine, peak, strict=True))
        target = TARGETS.get(arch)
        verdict = f">= {target:g}x {'ok' if target and ratio >= target else 'MISSED'}" if target else ""
        print(
            f"{arch:<15} {statistics.median(tutorial):15,.0f} {statistics.median(mine):10,.0f} {ratio:6.1f}x "
            f"{verdict:>7}  {use:.0%} of {statistics.median(peak) / 1e9:.0f} GFLOP/s "
            f"({flop_per_image / 1e6:.1f} MFLOP/image/step, batch {recipe.batch_size})"
        )
        print(f"{'':<15} ratio per round: {', '.join(f'{z / t:.1f}x' for z, t in zip(mine, tutorial, strict=True))}")


if __name__ == "__main__":
    main()
