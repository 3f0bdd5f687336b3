"""Benchmark: loading a folder of images the first time (decoding every file) and again (from zoo's cache).

Run: python tests/benchmarks/folder_cache.py [--images 6000]
It writes seven-segment digits as PNG files into a temporary folder, then times `folder_dataset`
and both splits' loading, cold and warm, in one run. Target: a warm start in about a second.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from PIL import Image

from zoo.folders import folder_dataset
from zoo.loader import get_registry


def load_all(root: Path) -> float:
    start = time.perf_counter()
    ds = folder_dataset(root)
    for split in ("train", "test"):
        ds.load(split, root)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ZOO_CACHE_DIR"] = str(Path(tmp) / "cache")
        root = Path(tmp) / "digits"
        images, labels = get_registry().dataset("sevenseg").load("train", root)
        for i in range(args.images):
            folder = root / f"digit_{int(labels[i])}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i, 0].numpy()).save(folder / f"{i:05d}.png")
        cold, warm = load_all(root), load_all(root)
        print(f"{args.images} PNG files: first load {cold:.2f} s (decode), second {warm:.2f} s (cache), "
              f"{cold / warm:.1f}x faster")  # fmt: skip


if __name__ == "__main__":
    main()
