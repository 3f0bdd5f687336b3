"""Classifying image files with a run or any exported file; ``zoo predict model.onnx`` needs onnxruntime alone."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo import runs
from zoo.card import ModelCard
from zoo.errors import DataWarning, SettingError, ZooError
from zoo.files import read_json, sha256
from zoo.images import light_background, read_image
from zoo.loader import get_registry
from zoo.registry import Exporter
from zoo.weights import source_path

__all__ = ["Prediction", "Run", "classify", "exporter_for", "load_runner", "predict", "torch_runner"]

Run = Callable[[np.ndarray], np.ndarray]
"""A model as a function from a normalised float32 batch N×C×H×W to scores N×classes."""


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
    images: Sequence[str | Path],
    top_k: int,
    invert: bool | None,
) -> list[Prediction]:
    """Top-``top_k`` classes per image: read and normalised as the training data was, then ``run``.

    ``invert=None`` inverts a grey image whose background is the opposite of the training data's
    (a dark digit on white paper for an MNIST model), judged by its border against the data's mean.
    """
    if top_k < 1:
        raise SettingError("top_k", f"must be at least 1, got {top_k}")
    c, h, w = card.input_shape
    mean = np.asarray(card.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(card.std, dtype=np.float32).reshape(1, -1, 1, 1)
    results = []
    for image in map(Path, images):
        try:
            pixels = read_image(image, (c, h, w))
        except ZooError as exc:
            results.append(Prediction(image, error=str(exc)))
            continue
        flip = invert if invert is not None else c == 1 and light_background(pixels) != (float(mean.mean()) > 0.5)
        if flip:
            pixels = 255 - pixels
        x = ((pixels[None].astype(np.float32) / 255 - mean) / std).astype(np.float32)
        scores = run(x)[0].astype(np.float64)
        probabilities = np.exp(scores - scores.max())
        probabilities /= probabilities.sum()
        best = np.argsort(-probabilities)[:top_k]
        results.append(Prediction(image, [(card.classes[i], float(probabilities[i])) for i in best], inverted=flip))
    return results


def exporter_for(path: Path) -> Exporter:
    """The export format a file is in, by its name's suffix."""
    formats = get_registry().exporters.values()
    matches = [e for e in formats if path.name.endswith(e.suffix)]
    if not matches:
        known = ", ".join(e.suffix for e in formats)
        raise ZooError(f"{path}: not a file zoo reads; give a run directory or a {known} file")
    return max(matches, key=lambda e: len(e.suffix))


def _check_manifest(path: Path) -> None:
    """Refuse a file whose sha256 differs from the one recorded in the ``manifest.json`` written beside it; say so
    when a manifest is there but cannot be checked against."""
    manifest = path.parent / "manifest.json"
    if not manifest.exists():
        return
    try:
        files = read_json(manifest)["files"]
        recorded = [e["sha256"] for e in files.values() if e.get("path") == path.name]
    except (ZooError, KeyError, TypeError, AttributeError) as exc:
        why = exc if isinstance(exc, ZooError) else f"{manifest} is not one zoo wrote"
        warnings.warn(f"{path} was not checked against its manifest: {why}", DataWarning, stacklevel=3)
        return
    if not recorded:
        return  # the manifest does not list this file: it was not exported here
    actual = sha256(path)
    if len(set(recorded)) != 1 or actual != recorded[0]:
        raise ZooError(
            f"{path} is not the file {manifest} lists: its sha256 is {actual}, the manifest says "
            f"{' or '.join(map(str, recorded))}; it was changed after export, so zoo will not load it (export it again)"
        )


def load_runner(path: str | Path, trust: bool = False) -> tuple[Run, ModelCard]:
    """A function from normalised float32 batches to scores, and the model card, for a run, any exported file, or
    published weights ``ARCH:TAG``.

    Only the file's own runtime is imported: an .onnx file needs onnxruntime, not torch; zoo's own .safetensors
    files load through zoo.checkpoint, whatever exporters are installed.
    A format whose files can run code (TorchScript, .pt2) is loaded only with ``trust=True``.
    """
    source = runs.find_weights(source_path(path))
    if source.suffix == ".safetensors":
        from zoo.inference import load_model

        _check_manifest(source)
        model, card = load_model(source)
        return _probe(torch_runner(model), card, source), card
    exporter = exporter_for(source)
    if exporter.runs_code and not trust:
        raise ZooError(
            f"{source} is a {exporter.name} file, and loading one runs code it carries; load it only from a source "
            f"you trust, with --trust (trust=True in Python), or use its .onnx or .safetensors export"
        )
    _check_manifest(source)
    try:
        run, meta = exporter.load(source)
    except ZooError:
        raise
    except Exception as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ZooError(
            f"{source} could not be loaded as {exporter.name} ({detail}); export it with `zoo export`"
        ) from exc
    if not meta:
        raise ZooError(f"{source} carries no zoo metadata; export it with `zoo export`")
    card = ModelCard.from_json(meta, source)
    return _probe(run, card, source), card


def _probe(run: Run, card: ModelCard, source: Path) -> Run:
    """``run``, once one image of the card's shape has given one finite score per class."""
    try:  # one image of the declared shape must give one score per declared class
        scores = np.asarray(run(np.zeros((1, *card.input_shape), dtype=np.float32)))
    except Exception as exc:
        raise ZooError(
            f"{source} does not run on one {'x'.join(map(str, card.input_shape))} image, the shape "
            f"its metadata declares ({' '.join(str(exc).split())[:200]})"
        ) from exc
    if scores.shape != (1, card.num_classes):
        raise ZooError(
            f"{source} gives scores of shape {scores.shape} for one image, but its metadata lists "
            f"{card.num_classes} classes; use a file written by zoo"
        )
    if not np.isfinite(scores).all():
        raise ZooError(f"{source} gives non-finite scores: its weights are broken; train or export it again")
    return run


def torch_runner(module: Callable[[Any], Any]) -> Run:
    """A torch module (or any callable on tensors) as a function on float32 numpy batches, in inference mode."""
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).float().numpy()  # type: ignore[no-any-return]

    return run


def predict(
    path: str | Path,
    images: Sequence[str | Path],
    top_k: int = 3,
    invert: bool | None = None,
    *,
    trust: bool = False,
) -> list[Prediction]:
    """The ``top_k`` classes for each image file; an unreadable file gets an error and the others still run.

    ``invert``: True or False forces grey levels inverted or not; None (the default) decides per image.

    ``trust=True`` allows formats whose files can run code when loaded (TorchScript, .pt2).
    """
    run, card = load_runner(path, trust)
    return classify(run, card, images, top_k, invert)
