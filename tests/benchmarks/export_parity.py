"""Benchmark: how close every correct float32 export comes to the parity limit, over seeds, data sets and batches.

For each seed, data set and built-in architecture it trains a short run (one epoch of the default
recipe, `--epochs`, on `--limit` images if given), exports every format with the check set to accept
anything, and reads back what the check measured: the largest difference in float32 rounding steps
at the output row's scale, on real test images and on random inputs, at batch sizes 1, 2, 64 and 256.
The margin is the default limit (zoo.exporting.DEFAULT_ULPS) over the worst measured value: above 1,
every correct file passes with that much room.

Run: python tests/benchmarks/export_parity.py --data-dir ../shared/datasets [--seeds 0 1 ... 9]
MNIST is skipped (with a note) when it is not in --data-dir.
"""

from __future__ import annotations

import argparse
import collections
import copy
import math
import tempfile
import warnings
from pathlib import Path

from machine import describe
from zoo.exporters.formats import run_onnx, write_onnx

import zoo
from zoo.errors import ZooError
from zoo.exporting import DEFAULT_ULPS, export, rounding_steps
from zoo.runtimes import load_model

BROKEN = {  # the errors the check must catch, as tests/test_export.py makes them
    "all weights x(1+1e-3)": lambda m: [p.mul_(1 + 1e-3) for p in m.parameters()],
    "last layer x(1+1e-4)": lambda m: [p for n, p in m.named_parameters() if n.endswith("weight")][-1].mul_(1 + 1e-4),
    "last bias dropped": lambda m: [p for n, p in m.named_parameters() if n.endswith("bias")][-1].zero_(),
}


def broken_steps(run_path: Path, out: Path) -> dict[str, float]:
    """For each deliberate error, the largest difference (in rounding steps) of its ONNX file on random inputs."""
    import torch

    model, card = load_model(run_path)
    x = torch.randn(64, *card.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(x).numpy()
    found = {}
    for name, change in BROKEN.items():
        broken = copy.deepcopy(model)
        with torch.no_grad():
            change(broken)
        path = out / "broken.onnx"
        write_onnx(broken, x[:2], card.to_json(), path, 17)
        run, _ = run_onnx(path)
        found[name] = float(rounding_steps(expected, run(x.numpy())).max())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="../shared/datasets")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--datasets", nargs="+", default=["sevenseg", "mnist"])
    parser.add_argument("--archs", nargs="+", default=None)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="train on this many images (default: all)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation, on purpose
    warnings.simplefilter("ignore", DeprecationWarning)  # the legacy ONNX exporter, as zoo uses it
    registry = zoo.get_registry()
    archs = args.archs or sorted(a for a, item in registry.architectures.items() if registry.provider(item).builtin)
    print(f"{describe()}; limit {DEFAULT_ULPS:g} float32 rounding steps")
    worst: dict[tuple[str, str], float] = collections.defaultdict(float)  # (format, inputs) -> worst steps
    worst_arch: dict[str, float] = collections.defaultdict(float)
    disagreements = 0
    caught: dict[str, float] = collections.defaultdict(lambda: math.inf)  # broken variant -> smallest error seen
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            try:
                registry.dataset(dataset).load("test", Path(args.data_dir), download=False)
            except ZooError as exc:
                print(f"skipping {dataset}: {exc}")
                continue
            for seed in args.seeds:
                for arch in archs:
                    out = Path(tmp) / f"{arch}-{dataset}-{seed}"
                    run = zoo.train(arch, dataset, seed=seed, epochs=args.epochs, limit=args.limit, out=out,
                                    progress="none", data_dir=args.data_dir)  # fmt: skip
                    result = export(str(run.path), ulps=math.inf, batch_sizes=(1, 2, 64, 256),
                                    data_dir=args.data_dir, out=out / "export")  # fmt: skip
                    for c in result.checks:
                        worst[(c.format, c.inputs)] = max(worst[(c.format, c.inputs)], c.ulps)
                        worst_arch[arch] = max(worst_arch[arch], c.ulps if c.format != "safetensors" else 0)
                        disagreements += c.inputs == "real" and c.top1_agreement < 1
                    for name, found in broken_steps(run.path, out).items():
                        caught[name] = min(caught[name], found)
                    steps = max(c.ulps for c in result.checks)
                    print(
                        f"{dataset:<9} seed {seed}  {arch:<14} test {run.test_accuracy:6.2%}  "
                        f"worst {steps:6.2f} steps  margin {DEFAULT_ULPS / max(steps, 1e-9):6.1f}x",
                        flush=True,
                    )
    print("\nworst float32 rounding steps per format and inputs (margin = limit / worst):")
    for (fmt, inputs), steps in sorted(worst.items()):
        margin = "bit-identical" if steps == 0 else f"margin {DEFAULT_ULPS / steps:.1f}x"
        print(f"  {fmt:<12} {inputs:<7} {steps:8.2f}  {margin}")
    for arch, steps in sorted(worst_arch.items()):
        print(f"  {arch:<14} worst {steps:.2f} steps, margin {DEFAULT_ULPS / max(steps, 1e-9):.1f}x")
    print("broken ONNX files, smallest error over all runs (margin = smallest / limit):")
    for name, steps in caught.items():
        print(f"  {name:<24} {steps:10.1f} steps  margin {steps / DEFAULT_ULPS:.1f}x")
    overall = max(worst.values(), default=0.0)
    print(f"overall worst {overall:.2f} steps: margin {DEFAULT_ULPS / max(overall, 1e-9):.1f}x; "
          f"batches with any top-1 change on real images: {disagreements}")  # fmt: skip


if __name__ == "__main__":
    main()
