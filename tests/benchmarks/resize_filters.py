"""Benchmark: the test accuracy of published weights on test images saved larger, then shrunk back by each filter.

Each test split is enlarged by whole factors (nearest-neighbour, as image editors zoom, and bicubic, a smooth
enlargement), written nowhere, and shrunk back to the model's size with PIL's bilinear, box and Lanczos filters;
zoo shrinks with box (zoo.images.resize). The table gives each filter's accuracy beside the original images'.

Run: python tests/benchmarks/resize_filters.py --data-dir ../shared/datasets
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import numpy as np
import torch
from machine import describe
from PIL import Image

import zoo
from zoo.errors import DatasetNotFound
from zoo.loader import get_registry

FILTERS = ("BILINEAR", "BOX", "LANCZOS")


def score(model: torch.nn.Module, labels: torch.Tensor, pixels: list[np.ndarray]) -> float:
    """Top-1 accuracy of the model on grey uint8 images H×W, normalised as its card says."""
    card = model.zoo_card
    x = (torch.from_numpy(np.stack(pixels))[:, None].float() / 255 - card.mean[0]) / card.std[0]
    with torch.no_grad():
        return float((model(x).argmax(1) == labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--weights", nargs="+", default=["mnist_cnn32:mnist", "lenet_bn:fashionmnist"])
    parser.add_argument("--factors", nargs="+", type=int, default=[3, 4])
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(describe())
    print(f"{'weights':24} {'enlarged':14} {'original':>9} " + " ".join(f"{f.lower():>9}" for f in FILTERS))
    for name in args.weights:
        model = zoo.load(name)
        try:
            images, labels = get_registry().dataset(model.zoo_card.dataset).load("test", args.data_dir, download=False)
        except DatasetNotFound as exc:
            print(f"{name}: skipped ({exc})")
            continue
        accuracy = functools.partial(score, model, labels)
        originals = [image[0].numpy() for image in images]
        size = originals[0].shape[::-1]
        for how in ("NEAREST", "BICUBIC"):
            for k in args.factors:
                big = [Image.fromarray(a).resize((size[0] * k, size[1] * k), Image.Resampling[how]) for a in originals]
                shrunk = {f: accuracy([np.asarray(b.resize(size, Image.Resampling[f])) for b in big]) for f in FILTERS}
                print(f"{name:24} {how.lower() + f' {k}x':14} {accuracy(originals):9.2%} "
                      + " ".join(f"{shrunk[f]:9.2%}" for f in FILTERS), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
