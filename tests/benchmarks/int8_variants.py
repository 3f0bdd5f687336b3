"""Benchmark: onnxruntime static int8 quantization choices per built-in: top-1 agreement with the float32 model
and accuracy change on the full test split, file size, and images/s against float32 onnxruntime (alternating
rounds), for the published weights.  The first variant has onnx_int8's settings.

Run: python tests/benchmarks/int8_variants.py --data-dir ../shared/datasets [--cifar-dir ../data] [--archs ...]
Goal (the approximate policy): agreement >= 99.5%, accuracy change >= -0.3 points; int8 recommended where faster.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
from machine import describe
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from zoo.exporters.formats import fold_batch_norms, write_onnx

import zoo
from zoo.benchmarking import Contender, measure
from zoo.runtimes import load_model
from zoo.weights import fetch

WEIGHTS = {"mnist_cnn32": "mnist_cnn32:mnist", "mnist_cnn6_16": "mnist_cnn6_16:mnist",
           "lenet_bn": "lenet_bn:fashionmnist", "cifar_seq": "cifar_seq:cifar10"}  # fmt: skip


def variants(convs: list[str], gemms: list[str]) -> dict[str, dict[str, Any]]:
    u8 = {"activation_type": QuantType.QUInt8}
    return {
        "int8 per tensor (onnx_int8)": {"activation_type": QuantType.QInt8},
        "uint8 activations": u8,
        "per-channel weights": {**u8, "per_channel": True},
        "per-channel, last layer float": {**u8, "per_channel": True, "nodes_to_exclude": gemms[-1:]},
        "per-channel, first+last float": {**u8, "per_channel": True, "nodes_to_exclude": [*convs[:1], *gemms[-1:]]},
        "int16 activations": {"activation_type": QuantType.QInt16},
        "int16 weights, per-channel": {**u8, "per_channel": True, "weight_type": QuantType.QInt16},
    }


class Reader(CalibrationDataReader):  # type: ignore[misc]
    def __init__(self, images: torch.Tensor) -> None:
        self.batches = iter([{"input": images[i : i + 32].numpy()} for i in range(0, len(images), 32)])

    def get_next(self) -> dict[str, Any] | None:
        return next(self.batches, None)


def session_run(path: Path):  # type: ignore[no-untyped-def]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"input": x})[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--cifar-dir", default="../data")
    parser.add_argument("--archs", nargs="+", default=list(WEIGHTS))
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # onnxruntime.quantization's advice to its developers
    torch.set_num_threads(2)
    print(describe())
    for arch in args.archs:
        weights = zoo.get_registry().weights[WEIGHTS[arch]]
        model, card = load_model(fetch(weights))
        ds = zoo.get_registry().dataset(card.dataset)
        root = Path(args.cifar_dir if card.dataset == "cifar10" else args.data_dir)
        mean, std = torch.tensor(card.mean).view(1, -1, 1, 1), torch.tensor(card.std).view(1, -1, 1, 1)
        train, _ = ds.load("train", root)
        images, labels = ds.load("test", root)
        chosen = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:256]
        calibration = (train[chosen] / 255 - mean) / std
        test = ((images / 255 - mean) / std).numpy()
        with torch.no_grad():
            expected = model(torch.from_numpy(test)).argmax(1).numpy()
        accuracy = (expected == labels.numpy()).mean()
        print(f"\n{arch} ({weights.name}, {len(test):,} test images, float32 accuracy {accuracy:.2%})")
        with tempfile.TemporaryDirectory() as tmp:
            float32, prepared = Path(tmp) / "float32.onnx", Path(tmp) / "prepared.onnx"
            write_onnx(fold_batch_norms(model), calibration[:2], {}, float32, 17)
            quant_pre_process(str(float32), str(prepared))
            nodes = onnx.load(str(prepared)).graph.node
            convs = [n.name for n in nodes if n.op_type == "Conv"]
            gemms = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]
            contenders = [Contender("float32", "float32", session_run(float32))]
            for i, (label, options) in enumerate(variants(convs, gemms).items()):
                out = Path(tmp) / f"{i}.onnx"
                quantize_static(str(prepared), str(out), Reader(calibration), quant_format=QuantFormat.QDQ,
                                **{"per_channel": False, "weight_type": QuantType.QInt8, **options})  # fmt: skip
                run = session_run(out)
                got = np.concatenate([run(test[j : j + 1000]).argmax(1) for j in range(0, len(test), 1000)])
                agreement, change = (got == expected).mean(), 100 * ((got == labels.numpy()).mean() - accuracy)
                verdict = "passes" if agreement >= 0.995 and change >= -0.3 else "refused"
                print(f"  {label:<31} agreement {agreement:7.2%}  accuracy {change:+.2f} pt  "
                      f"size {out.stat().st_size / float32.stat().st_size:5.1%}  {verdict}", flush=True)  # fmt: skip
                contenders.append(Contender(label, "int8", run))
            timings = measure(contenders, card.input_shape, (1, 256), rounds=3, seconds=0.25)
        base = timings["float32"]
        for label, (one, many) in timings.items():
            one_x, many_x = base[0].median_ms / one.median_ms, many.images_per_s / base[1].images_per_s
            print(f"  {label:<31} batch 1 {one.median_ms:6.3f} ms ({one_x:4.2f}x)  "
                  f"batch 256 {many.images_per_s:9,.0f} img/s ({many_x:4.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
