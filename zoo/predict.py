"""Classifying image files with any runner, torch-free: ``zoo predict model.onnx`` needs onnxruntime alone."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ZooError
from zoo.images import read_image

__all__ = ["Prediction", "classify", "predict_onnx"]


@dataclass
class Prediction:
    image: Path
    top: list[tuple[str, float]] = field(default_factory=list)
    """(class name, probability), most likely first."""
    error: str = ""


def classify(
    run: Callable[[np.ndarray], np.ndarray],
    meta: dict[str, Any],
    images: Sequence[str | Path],
    top_k: int,
    invert: bool,
) -> list[Prediction]:
    """Top-``top_k`` classes per image: read and normalised as the training data was, then ``run``."""
    if top_k < 1:
        raise ZooError(f"--top-k must be at least 1, got {top_k}")
    c, h, w = meta["input_shape"]
    mean = np.asarray(meta["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(meta["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    results = []
    for image in map(Path, images):
        try:
            pixels = read_image(image, (c, h, w), invert)
        except ZooError as exc:
            results.append(Prediction(image, error=str(exc)))
            continue
        x = ((pixels[None].astype(np.float32) / 255 - mean) / std).astype(np.float32)
        scores = run(x)[0].astype(np.float64)
        probabilities = np.exp(scores - scores.max())
        probabilities /= probabilities.sum()
        best = np.argsort(-probabilities)[:top_k]
        results.append(Prediction(image, [(meta["classes"][i], float(probabilities[i])) for i in best]))
    return results


def predict_onnx(
    path: str | Path, images: Sequence[str | Path], top_k: int = 3, invert: bool = False
) -> list[Prediction]:
    """Like ``zoo.predict``, for an exported .onnx file, with onnxruntime and without importing torch."""
    import onnxruntime

    from exporters.formats import onnx_metadata

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ZooError(
            f"{path} is not an ONNX model onnxruntime can load ({' '.join(str(exc).split())[:200]})"
        ) from exc
    meta = onnx_metadata(session.get_modelmeta().custom_metadata_map)
    if "input_shape" not in meta:
        raise ZooError(f"{path} carries no zoo metadata; export it with `zoo export`")
    name = session.get_inputs()[0].name
    return classify(lambda x: session.run(None, {name: x})[0], meta, images, top_k, invert)
