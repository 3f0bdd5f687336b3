"""Benchmark: `zoo bench` of every built-in's published weights, every runtime, against limits that must bound.

For each of mnist_cnn32, mnist_cnn6_16, lenet_bn (FashionMNIST) and cifar_seq: the bench table, then the goals:
the best approximate runtime that passed its proof over onnxruntime float32 at batch 256, and the fastest float32
runtime's share of its roofline. Exits non-zero if any figure came out above its limit (a limit that does not
bound is a bug in the limit).

Run: python tests/benchmarks/runtimes.py --data-dir ../shared/datasets [--cifar-dir ../data] [--weights ...]
Goals: best approximate >= 2x onnxruntime float32 for mnist_cnn32 and cifar_seq; fastest float32 >= 70% of the
roofline for the same two.
"""

from __future__ import annotations

import argparse
import sys

import zoo
from zoo.loader import get_registry

WEIGHTS = ("mnist_cnn32:mnist", "mnist_cnn6_16:mnist", "lenet_bn:fashionmnist", "cifar_seq:cifar10")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/datasets")
    parser.add_argument("--cifar-dir", default="../data", help="where CIFAR-10-dataset/ (the PNG clone) is")
    parser.add_argument("--weights", nargs="+", default=list(WEIGHTS))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    faults = []
    for weights in args.weights:
        data_dir = args.cifar_dir if "cifar" in weights else args.data_dir
        result = zoo.bench(weights, batch_sizes=(1, 256), rounds=args.rounds, data_dir=data_dir)
        print(result.table(), end="\n\n")
        at_256 = {name: timings[-1] for name, timings in result.timings.items()}
        onnx = at_256["onnx"].images_per_s
        proved = {n for n, e in get_registry().exporters.items() if e.proof == "approximate"}
        approximate = [n for n in at_256 if n in proved]  # timed only once its proof on the test split passed
        if approximate:
            best = max(approximate, key=lambda n: at_256[n].images_per_s)
            print(f"{weights}: best approximate runtime at batch 256: {best} ({result.precisions[best]}), "
                  f"{at_256[best].images_per_s / onnx:.2f}x onnxruntime float32")  # fmt: skip
        exact = result.fastest(256, "float32")
        share = at_256[exact].roofline_percent
        print(f"{weights}: fastest float32 at batch 256: {exact}, "
              f"{'no roofline' if share is None else f'{share:.0f}% of its roofline'}\n")  # fmt: skip
        faults += result.faults
    if faults:
        sys.exit("limits that did not bound:\n" + "\n".join(faults))


if __name__ == "__main__":
    main()
