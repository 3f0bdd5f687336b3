"""Benchmark: export + verify time, file size and parity per architecture and format; onnxruntime against
torch eager inference at batch 1 and 256, alternating in one run; and the dynamo ONNX exporter beside
the TorchScript-based one that zoo uses.

Run: python tests/benchmarks/export_speed.py [--rounds 3]
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
from zoo.export import export


def images_per_s(run, x: np.ndarray, seconds: float = 1.0) -> float:  # type: ignore[no-untyped-def]
    run(x)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(x)
        count += 1
    return count * len(x) / (time.perf_counter() - start)


def dynamo_export_seconds(model: torch.nn.Module, shape: tuple[int, ...], path: Path) -> str:
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        return "n/a (needs onnxscript)"
    start = time.perf_counter()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(2, *shape),), str(path), dynamo=True, external_data=False,
                          dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)  # fmt: skip
    return f"{time.perf_counter() - start:.2f} s"


def _eager(model: torch.nn.Module):  # type: ignore[no-untyped-def]
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()  # type: ignore[no-any-return]

    return run


def _ort(session: onnxruntime.InferenceSession):  # type: ignore[no-untyped-def]
    return lambda x: session.run(None, {"input": x})[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, 2 threads")
    print(f"\n{'architecture':<14} {'format':<12} {'export+verify':>13} {'bytes':>10} {'max abs diff':>12}")
    summary = []
    for name, arch in zoo.get_registry().architectures.items():
        with tempfile.TemporaryDirectory() as out:
            total = 0.0
            for fmt in zoo.get_registry().exporters:
                start = time.perf_counter()
                result = export(name, [fmt], untrained=True, out=out)
                seconds = time.perf_counter() - start
                total += seconds
                path = result.files[fmt]
                worst = max(c.max_abs for c in result.checks)
                print(f"{name:<14} {fmt:<12} {seconds:12.2f}s {path.stat().st_size:10,} {worst:12.2e}")
            verdict = "<= 10 s ok" if total <= 10 else "MISSED"
            print(f"{name:<14} {'all formats':<12} {total:12.2f}s {'':>10} {verdict:>12}")
            model = arch.build().eval()
            session = onnxruntime.InferenceSession(str(Path(out) / f"{name}-untrained.onnx"), options)
            dynamo = dynamo_export_seconds(model, arch.input_shape, Path(out) / "dynamo.onnx")

            eager, ort = _eager(model), _ort(session)
            for batch in (1, 256):
                x = np.random.default_rng(0).standard_normal((batch, *arch.input_shape), dtype=np.float32)
                samples: dict[str, list[float]] = {"eager": [], "ort": []}
                for _ in range(args.rounds):  # alternate, so drift in machine speed hits both alike
                    samples["eager"].append(images_per_s(eager, x))
                    samples["ort"].append(images_per_s(ort, x))
                e, o = statistics.median(samples["eager"]), statistics.median(samples["ort"])
                summary.append((name, batch, e, o, dynamo))
    print(f"\n{'architecture':<14} {'batch':>5} {'eager img/s':>12} {'ORT img/s':>12} {'ratio':>6}  dynamo export")
    for name, batch, e, o, dynamo in summary:
        print(f"{name:<14} {batch:5} {e:12,.0f} {o:12,.0f} {o / e:5.1f}x  {dynamo if batch == 1 else ''}")


if __name__ == "__main__":
    main()
