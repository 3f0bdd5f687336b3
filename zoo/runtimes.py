"""Loading a resolved model (zoo.references) into a function in its own runtime (an .onnx file needs onnxruntime
alone), or into a torch module."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zoo.card import ModelCard
from zoo.errors import ZooError
from zoo.loader import get_registry
from zoo.references import ModelRef, resolve

if TYPE_CHECKING:
    from torch import nn

__all__ = ["Run", "load", "load_model", "load_runner", "torch_runner"]

Run = Callable[[np.ndarray], np.ndarray]
"""A model as a function from a normalised float32 batch N×C×H×W to scores N×classes."""


def load_runner(model: str | Path | ModelRef, trust: bool = False) -> tuple[Run, ModelCard]:
    """A function from normalised float32 batches to scores, and the model card, for anything
    ``zoo.references.resolve`` resolves: a run, any exported file, published weights ``ARCH:TAG``.

    Only the file's own runtime is imported: an .onnx file needs onnxruntime, not torch; zoo's own .safetensors
    files load through zoo.checkpoint, whatever exporters are installed.
    A format whose files can run code (TorchScript, .pt2) is loaded only with ``trust=True``.
    """
    ref = resolve(model)
    source, exporter = ref.path, ref.exporter
    if exporter is None:
        torch_model, card = load_model(ref)
        return _probe(torch_runner(torch_model), card, source), card
    if exporter.runs_code and not trust:
        raise ZooError(
            f"{source} is a {exporter.name} file, and loading one runs code it carries; load it only from a source "
            f"you trust, with --trust (trust=True in Python), or use its .onnx or .safetensors export"
        )
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


def load_model(model: str | Path | ModelRef) -> tuple[nn.Module, ModelCard]:
    """The torch model in a run directory (its best checkpoint), a zoo .safetensors file or published weights
    ``ARCH:TAG``, in eval mode, and its card."""
    from zoo import checkpoint  # torch: imported only when a torch model is wanted, never for an .onnx file

    ref = resolve(model)
    if ref.exporter is not None:
        raise ZooError(
            f"{ref.path} is a {ref.exporter.name} file; give a run directory, a .safetensors file or ARCH:TAG"
        )
    saved = checkpoint.load(ref.path)
    return checkpoint.build(saved, ref.path), saved.card


def load(model: str | Path | ModelRef, weights: str | None = None) -> nn.Module:
    """A trained model in eval mode: from a run directory, a zoo safetensors file, or published weights
    (``load("cnn32", weights="mnist")``, or ``load("cnn32:mnist")``; ``weights="default"``: the default ones;
    an architecture alone: its newest run in ./runs, else its default weights).

    Its ``zoo.card.ModelCard`` (classes, input shape, mean and std, the data set, the training settings) is
    ``model.zoo_card``; published weights are ``model.zoo_weights`` too, whose ``transforms()`` prepares images for
    the model.
    """
    if weights is not None:
        model = f"{model}:{weights}" if weights != "default" else get_registry().find_weights(str(model)).name
    ref = resolve(model)
    torch_model, card = load_model(ref)
    # Plain attributes: nn.Module's __setattr__ would type-check them.
    torch_model.__dict__["zoo_card"] = card
    torch_model.__dict__["zoo_weights"] = ref.weights
    return torch_model
