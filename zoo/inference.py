"""Using trained weights: load a model from a run or checkpoint, evaluate it on a data set, classify image files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo import checkpoint, evaluation, plots, runs
from zoo.data import Normalizer, Split, resolve_data_dir
from zoo.errors import ZooError
from zoo.files import write_text
from zoo.loader import get_registry
from zoo.registry import format_shape

__all__ = ["EvalResult", "Prediction", "evaluate", "load_model", "predict"]


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model in a run directory (its best checkpoint) or a checkpoint file, in eval mode, and its metadata."""
    from zoo.training import _load_weights

    source = runs.find_weights(Path(path))
    saved = checkpoint.load(source)
    meta = saved.meta
    arch = get_registry().architecture(meta["architecture"])
    model = arch.build(tuple(meta["input_shape"]), len(meta["classes"]))
    _load_weights(model, saved.weights, source)
    return model.eval(), meta


@dataclass
class EvalResult:
    weights: Path
    dataset: str
    evaluation: evaluation.Evaluation
    classes: tuple[str, ...]
    out: Path

    @property
    def accuracy(self) -> float:
        return self.evaluation.accuracy

    def report(self) -> str:
        return evaluation.report(self.evaluation, self.classes)


def evaluate(
    path: str | Path, dataset: str | None = None, *, data_dir: str | Path | None = None, out: str | Path | None = None
) -> EvalResult:
    """Score trained weights on a data set's test split (default: the one they were trained on).

    Writes report.txt, confusion.png and misses.png to ``out`` (default: ``RUN/eval-DATASET``,
    or ``WEIGHTS-eval-DATASET`` beside a weights file).
    """
    model, meta = load_model(path)
    ds = get_registry().dataset(dataset or meta["dataset"])
    trained = (tuple(meta["input_shape"]), len(meta["classes"]))
    if (ds.shape, ds.num_classes) != trained:
        raise ZooError(
            f"{path} was trained on {format_shape(trained[0])} images in {trained[1]} classes; "
            f"{ds.name} has {format_shape(ds.shape)} images in {ds.num_classes}: pick a data set of the same shape"
        )
    images, labels = ds.load("test", resolve_data_dir(data_dir))
    split = Split(images, labels)
    # Normalise as the training data was, whatever data set is scored now.
    scored = evaluation.evaluate(model, split, Normalizer(meta["mean"], meta["std"], torch.device("cpu"), False))
    source = Path(path)
    target = Path(out) if out else (source / f"eval-{ds.name}" if source.is_dir() else
                                    source.with_name(f"{source.stem}-eval-{ds.name}"))  # fmt: skip
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ZooError(f"cannot write to {target} ({exc.strerror}); pass --out DIR") from exc
    result = EvalResult(runs.find_weights(source), ds.name, scored, ds.classes, target)
    write_text(target / "report.txt", result.report() + "\n")
    plots.confusion(scored.confusion, ds.classes, target / "confusion.png")
    plots.misses(images, labels, scored.predictions, ds.classes, target / "misses.png")
    return result


@dataclass
class Prediction:
    image: Path
    top: list[tuple[str, float]] = field(default_factory=list)
    """(class name, probability), most likely first."""
    error: str = ""


def _read_image(path: Path, shape: tuple[int, int, int], invert: bool) -> torch.Tensor:
    """An image file as the training data looked: grey or RGB, resized to the model's input, uint8 C×H×W."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as file:
            img = ImageOps.exif_transpose(file).convert("L" if shape[0] == 1 else "RGB")
        img = img.resize((shape[2], shape[1]), Image.Resampling.BILINEAR)
        if invert:
            img = ImageOps.invert(img)
        data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    except FileNotFoundError as exc:
        raise ZooError(f"{path} does not exist; check the path") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        reason = "not an image zoo can read" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise ZooError(f"{path}: {reason}; give a PNG or JPEG file") from exc
    return data.view(shape[1], shape[2], shape[0]).permute(2, 0, 1)


def predict(path: str | Path, images: Sequence[str | Path], top_k: int = 3, invert: bool = False) -> list[Prediction]:
    """The ``top_k`` classes for each image file; an unreadable file gets an error and the others still run."""
    if top_k < 1:
        raise ZooError(f"--top-k must be at least 1, got {top_k}")
    model, meta = load_model(path)
    c, h, w = meta["input_shape"]
    shape = (c, h, w)
    normalize = Normalizer(meta["mean"], meta["std"], torch.device("cpu"), False)
    results = []
    for image in map(Path, images):
        try:
            pixels = _read_image(image, shape, invert)
        except ZooError as exc:
            results.append(Prediction(image, error=str(exc)))
            continue
        with torch.inference_mode():
            probabilities = model(normalize(pixels[None])).float().softmax(1)[0]
        values, indices = probabilities.topk(min(top_k, len(probabilities)))
        results.append(
            Prediction(image, [(meta["classes"][i], float(v)) for v, i in zip(values, indices, strict=True)])
        )
    return results
