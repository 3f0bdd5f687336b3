"""Classifying image files with any model file: read and normalised as the training data was, polarity included."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.card import ModelCard
from zoo.errors import SettingError, ZooError
from zoo.images import normalize, read_image
from zoo.polarity import check_invert, should_invert
from zoo.references import ModelRef, resolve
from zoo.runtimes import Run, load_runner

__all__ = ["Prediction", "classify", "predict", "prepare", "top_classes"]


@dataclass
class Prediction:
    image: Path
    top: list[tuple[str, float]] = field(default_factory=list)
    """(class name, probability), most likely first."""
    error: str = ""
    inverted: bool = False
    """The grey levels were inverted first (``invert``, or its background was the opposite of the training data's)."""


def classify(
    run: Run,
    card: ModelCard,
    images: Sequence[str | Path] | str | Path,
    top_k: int,
    invert: bool | None,
) -> list[Prediction]:
    """Top-``top_k`` classes per image: read and normalised as the training data was, then ``run``.

    ``invert=None`` inverts a grey image whose background is the opposite of the training data's
    (a dark digit on white paper for an MNIST model), judged by its border against the data's mean.
    """
    if isinstance(images, str | Path):  # one image named on its own, not a sequence of one-letter names
        images = [images]
    if not isinstance(top_k, int) or top_k < 1:
        raise SettingError("top_k", f"must be an integer of at least 1, got {top_k!r}")
    invert = check_invert(invert)
    results = []
    for image in map(Path, images):
        try:
            x, flip = prepare(read_image(image, card.input_shape), card, invert)
        except ZooError as exc:
            results.append(Prediction(image, error=str(exc)))
            continue
        results.append(Prediction(image, top_classes(run(x)[0], card.classes, top_k), inverted=flip))
    return results


def prepare(pixels: np.ndarray, card: ModelCard, invert: bool | None) -> tuple[np.ndarray, bool]:
    """One decoded image (uint8 C×H×W) as the model's input, a normalised float32 batch of one, turned round first
    where ``zoo.polarity.should_invert`` says so; and whether it was."""
    flip = should_invert(pixels, card.mean, invert)
    if flip:
        pixels = 255 - pixels
    return normalize(pixels, card.mean, card.std)[None], flip


def top_classes(scores: np.ndarray, classes: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The ``k`` most likely classes for one image's scores (logits or log-probabilities), with probabilities."""
    scores = scores.astype(np.float64)
    probabilities = np.exp(scores - scores.max())
    probabilities /= probabilities.sum()
    return [(classes[i], float(probabilities[i])) for i in np.argsort(-probabilities)[:k]]


def predict(
    model: str | Path | ModelRef,
    images: Sequence[str | Path] | str | Path,
    top_k: int = 3,
    invert: bool | None = None,
    *,
    trust: bool = False,
    runtime: str | None = None,
    data_dir: str | Path | None = None,
) -> list[Prediction]:
    """The ``top_k`` classes for each image file (or one file); an unreadable file gets an error and the others
    still run.

    ``invert``: True or False forces grey levels inverted or not; None (the default) decides per image.

    ``trust=True`` allows formats whose files can run code when loaded (TorchScript, .pt2). ``runtime`` runs the
    model in a registered runtime, proved first (``zoo.runtimes.load_runner``; ``data_dir`` holds the test split an
    approximate one is proved on).
    """
    run, card = load_runner(resolve(model), trust, runtime=runtime, data_dir=data_dir)
    return classify(run, card, images, top_k, invert)
