"""Using trained weights: load a model from a run or checkpoint, and evaluate it on a data set."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from zoo import checkpoint, evaluation, plots, runs
from zoo.card import ModelCard
from zoo.data import Normalizer, Split, resolve_data_dir
from zoo.errors import DatasetNotFound, DataWarning, ZooError
from zoo.files import write_text
from zoo.folders import find_dataset
from zoo.loader import get_registry
from zoo.prediction import load_runner
from zoo.registry import Dataset, format_shape
from zoo.weights import named_weights, source_path

__all__ = ["EvalResult", "evaluate", "load", "load_model"]


def load_model(path: str | Path) -> tuple[nn.Module, ModelCard]:
    """The model in a run directory (its best checkpoint), a checkpoint file or published weights ``ARCH:TAG``,
    in eval mode, and its card."""
    source = runs.find_weights(source_path(path))
    saved = checkpoint.load(source)
    return checkpoint.build(saved, source), saved.card


def load(path: str | Path, weights: str | None = None) -> nn.Module:
    """A trained model in eval mode: from a run directory, a zoo safetensors file, or published weights
    (``load("cnn32", weights="mnist")``, or ``load("cnn32:mnist")``; ``weights="default"``: the default ones).

    Its :class:`~zoo.card.ModelCard` (classes, input shape, mean and std, the data set, the training settings) is
    ``model.zoo_card``; published weights are ``model.zoo_weights`` too, whose ``transforms()`` prepares images for
    the model.
    """
    if weights is not None:
        path = f"{path}:{weights}" if weights != "default" else get_registry().find_weights(str(path)).name
    model, card = load_model(path)
    # Plain attributes: nn.Module's __setattr__ would type-check them.
    model.__dict__["zoo_card"] = card
    model.__dict__["zoo_weights"] = named_weights(path)
    return model


def _test_split(ds: Dataset, named: str | Path | None, recorded: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The test split from the data directory the user named, else from the one the run recorded when it is there
    (only read: a folder someone hands over does not choose where zoo downloads), else the usual one."""
    if named is None and recorded is not None:
        try:
            return ds.load("test", recorded, download=False)
        except DatasetNotFound:
            pass
    return ds.load("test", resolve_data_dir(named))


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
    path: str | Path,
    dataset: str | None = None,
    *,
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    trust: bool = False,
) -> EvalResult:
    """Score trained weights or an exported file on a data set's test split (default: the one they were trained on).

    Writes report.txt, confusion.png and misses.png to ``out`` (default: ``RUN/eval-DATASET``,
    ``WEIGHTS-eval-DATASET`` beside a weights file,
    ``runs/ARCH-TAG-eval-DATASET`` for published weights).  The data directory defaults to the one
    the run was trained with.  ``trust=True`` allows formats whose files can run code (TorchScript, .pt2).
    """
    run, card = load_runner(path, trust)
    c, h, _ = card.input_shape
    if dataset is None and (card.dataset is None or card.dataset_is_folder):
        found = f"was trained on the folder {card.dataset}" if card.dataset else "records no data set"
        raise ZooError(f"{path} {found}; name the data set to score it on: zoo eval {path} DATASET_OR_FOLDER")
    # A name recorded in the file means a registered data set, never a folder of that name.
    ds = find_dataset(dataset, image_size=h, grayscale=c == 1) if dataset else get_registry().dataset(str(card.dataset))
    if (ds.shape, ds.num_classes) != (card.input_shape, card.num_classes):
        raise ZooError(
            f"{path} was trained on {format_shape(card.input_shape)} images in {card.num_classes} classes; "
            f"{ds.name} has {format_shape(ds.shape)} images in {ds.num_classes}: pick a data set of the same shape"
        )
    if ds.classes != card.classes:
        warnings.warn(
            f"{ds.name}'s classes ({', '.join(ds.classes[:3])}, ...) are not the ones {path} was trained on "
            f"({', '.join(card.classes[:3])}, ...): the accuracy counts label indices that mean different things",
            DataWarning,
            stacklevel=2,
        )
    images, labels = _test_split(ds, data_dir, runs.recorded_data_dir(source_path(path)))
    split = Split(images, labels)
    # Normalise as the training data was, whatever data set is scored now.
    normalize = Normalizer(card.mean, card.std, torch.device("cpu"), False)
    scored = evaluation.evaluate(lambda x: torch.from_numpy(run(x.numpy())), split, normalize)
    source = source_path(path)
    if out is None and source != Path(path):  # published weights: not beside their file, in the installation
        out = Path("runs") / f"{source.stem}-eval-{ds.name}"
    target = (
        Path(out)
        if out
        else (source / f"eval-{ds.name}" if source.is_dir() else source.with_name(f"{source.stem}-eval-{ds.name}"))
    )
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ZooError(f"cannot write to {target} ({exc.strerror}); pass --out DIR") from exc
    result = EvalResult(runs.find_weights(source), ds.name, scored, ds.classes, target)
    write_text(target / "report.txt", result.report() + "\n")
    plots.confusion(scored.confusion, ds.classes, target / "confusion.png")
    plots.misses(images, labels, scored.predictions, ds.classes, target / "misses.png")
    return result
