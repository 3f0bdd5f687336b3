"""Benchmark: export + verify time, file size and parity per architecture and format; onnxruntime against
torch eager inference at batch 1 and 256, alternating in one run; and the dynamo ONNX exporter beside
the TorchScript-based one that zoo uses (export time, onnxruntime speed, parity).

Each round times every runner in turn; a ratio is the median of the rounds' ratios.

Run: python tests/benchmarks/export_speed.py [--rounds 3] [--archs NAME ...]
Targets: export + verify of all formats <= 10 s per architecture; onnxruntime >= 4x torch eager.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import torch

import zoo
from zoo.exporting import export
from zoo.runtimes import load_model


def images_per_s(run, x: np.ndarray, seconds: float = 1.0) -> float:  # type: ignore[no-untyped-def]
    run(x)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(x)
        count += 1
    return count * len(x) / (time.perf_counter() - start)


def dynamo_export(model: torch.nn.Module, shape: tuple[int, ...], path: Path) -> float | None:
    """Seconds the dynamo exporter takes to write ``path`` as one file; None without onnxscript, which it needs."""
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        return None
    start = time.perf_counter()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(2, *shape),), str(path), dynamo=True, external_data=False,
                          dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)  # fmt: skip
    return time.perf_counter() - start


def _eager(model: torch.nn.Module):  # type: ignore[no-untyped-def]
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()  # type: ignore[no-any-return]

    return run


def _ort(path: Path, options: onnxruntime.SessionOptions):  # type: ignore[no-untyped-def]
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--archs", nargs="+", default=list(zoo.get_registry().architectures))
    args = parser.parse_args()
    torch.set_num_threads(2)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, 2 threads")
    print(f"\n{'architecture':<14} {'format':<12} {'export+verify':>13} {'bytes':>10} {'max abs diff':>12}")
    summary = []
    for name in args.archs:
        arch = zoo.get_registry().architecture(name)
        with tempfile.TemporaryDirectory() as out:
            total, files = 0.0, {}
            for fmt in zoo.get_registry().exporters:
                start = time.perf_counter()
                result = export(name, [fmt], untrained=True, out=out)  # fresh weights of seed 0, the same each time
                seconds = time.perf_counter() - start
                total += seconds
                path = files[fmt] = result.files[fmt]
                worst = max(c.max_abs for c in result.checks)
                print(f"{name:<14} {fmt:<12} {seconds:12.2f}s {path.stat().st_size:10,} {worst:12.2e}")
            verdict = "<= 10 s ok" if total <= 10 else "MISSED"
            print(f"{name:<14} {'all formats':<12} {total:12.2f}s {'':>10} {verdict:>12}")
            model, _ = load_model(files["safetensors"])  # the weights the exports hold
            runners = {"eager": _eager(model), "ort": _ort(files["onnx"], options)}
            dynamo = dynamo_export(model, arch.input_shape, Path(out) / "dynamo.onnx")
            if dynamo is not None:
                runners["ort dynamo"] = _ort(Path(out) / "dynamo.onnx", options)
            for batch in (1, 256):
                x = np.random.default_rng(0).standard_normal((batch, *arch.input_shape), dtype=np.float32)
                expected = runners["eager"](x)
                diffs = {k: float(np.abs(run(x) - expected).max()) for k, run in runners.items() if k != "eager"}
                samples: dict[str, list[float]] = {k: [] for k in runners}
                for _ in range(args.rounds):  # alternate, so drift in machine speed hits all alike
                    for k, run in runners.items():
                        samples[k].append(images_per_s(run, x))
                speed = {k: statistics.median(v) for k, v in samples.items()}
                # each round's ratio is taken side by side, cancelling drift: report their median
                ratio = {k: statistics.median(o / e for o, e in zip(v, samples["eager"], strict=True))
                         for k, v in samples.items()}  # fmt: skip
                summary.append((name, batch, speed, ratio, diffs, dynamo))
    print(f"\n{'architecture':<14} {'batch':>5} {'eager img/s':>12} {'ORT img/s':>12} {'ratio':>6} {'max diff':>9}"
          f"   dynamo: {'ratio':>6} {'max diff':>9} {'export':>7}")  # fmt: skip
    for name, batch, speed, ratio, diffs, dynamo in summary:
        row = (f"{name:<14} {batch:5} {speed['eager']:12,.0f} {speed['ort']:12,.0f} {ratio['ort']:5.1f}x "
               f"{diffs['ort']:9.1e}")  # fmt: skip
        if dynamo is None:
            row += "   dynamo: n/a (needs onnxscript)"
        else:
            row += f"   dynamo: {ratio['ort dynamo']:5.1f}x {diffs['ort dynamo']:9.1e} {dynamo:6.2f}s"
        print(row)


if __name__ == "__main__":
    main()
