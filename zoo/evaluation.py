"""Scoring a model on a data set's test split: loss, accuracy, confusion matrix, per-class precision and recall, and
the report and plots ``zoo eval`` writes."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from zoo import plots
from zoo.data import Normalizer, Split, batches, resolve_data_dir
from zoo.errors import DatasetNotFound, DataWarning, ZooError
from zoo.files import writable_dir, write_text
from zoo.folders import dataset_for_model
from zoo.loader import get_registry
from zoo.references import ModelRef, resolve
from zoo.registry import Dataset, format_shape
from zoo.runtimes import load_runner

__all__ = ["EvalResult", "Evaluation", "evaluate", "report", "score"]


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    predictions: torch.Tensor
    labels: torch.Tensor
    probabilities: torch.Tensor
    """Softmax probabilities, N×classes."""

    @property
    def confusion(self) -> torch.Tensor:
        """Counts, rows the true class and columns the predicted one."""
        k = self.probabilities.shape[1]
        return torch.bincount(self.labels * k + self.predictions, minlength=k * k).view(k, k)

    def precision_recall(self) -> tuple[torch.Tensor, torch.Tensor]:
        confusion = self.confusion.double()
        hits = confusion.diag()
        return hits / confusion.sum(0).clamp_min(1), hits / confusion.sum(1).clamp_min(1)


@torch.inference_mode()
def score(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    split: Split,
    normalize: Normalizer,
    batch_size: int = 1000,
) -> Evaluation:
    """Run the whole split through ``model`` (in eval mode, if a module) in batches, without gradients."""
    training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    outputs = []
    for images, _ in batches(split, batch_size):
        outputs.append(model(normalize(images)).float().cpu())
    if isinstance(model, nn.Module):
        model.train(training)
    scores = torch.cat(outputs) if outputs else torch.empty(0, 0)
    labels = split.labels
    loss = float(nn.functional.cross_entropy(scores, labels)) if len(labels) else float("nan")
    predictions = scores.argmax(1)
    accuracy = float((predictions == labels).float().mean()) if len(labels) else float("nan")
    return Evaluation(loss, accuracy, predictions, labels, scores.softmax(1))


def report(evaluation: Evaluation, classes: Sequence[str]) -> str:
    """Accuracy, a per-class precision/recall table and the confusion matrix, as text."""
    precision, recall = evaluation.precision_recall()
    support = evaluation.confusion.sum(1)
    width = max(len("class"), *(len(c) for c in classes))
    lines = [
        f"accuracy {evaluation.accuracy:.2%} ({int((evaluation.predictions == evaluation.labels).sum()):,} of "
        f"{len(evaluation.labels):,}), loss {evaluation.loss:.4f}",
        "",
        f"{'class':<{width}}  precision   recall  support",
    ]
    for i, name in enumerate(classes):
        lines.append(f"{name:<{width}}  {precision[i]:9.2%}  {recall[i]:7.2%}  {int(support[i]):7,}")
    confusion = evaluation.confusion
    cell = max(5, len(f"{int(confusion.max()):,}") + 1)
    lines += ["", "confusion matrix (rows: true class, columns: predicted)"]
    lines.append(" " * width + "".join(f"{i:>{cell}}" for i in range(len(classes))))
    for i, name in enumerate(classes):
        lines.append(f"{name:<{width}}" + "".join(f"{int(n):>{cell},}" for n in confusion[i]))
    return "\n".join(lines)


def _test_split(
    ds: Dataset, named: str | Path | None, recorded: Path | None, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The test split from the data directory the user named, else from the one the run recorded when it is there
    (only read: a folder someone hands over does not choose where zoo downloads), else the usual one."""
    if named is None and recorded is not None:
        try:
            return ds.load("test", recorded, download=False)
        except DatasetNotFound:
            pass
    return ds.load("test", resolve_data_dir(named), download)


@dataclass
class EvalResult:
    weights: Path
    dataset: str
    evaluation: Evaluation
    classes: tuple[str, ...]
    out: Path
    runtime: str = ""
    """The registered runtime it was scored in, its precision and its proof; empty for the file's own runtime."""

    @property
    def accuracy(self) -> float:
        return self.evaluation.accuracy

    def report(self) -> str:
        return report(self.evaluation, self.classes)


def evaluate(
    model: str | Path | ModelRef,
    dataset: str | None = None,
    *,
    data_dir: str | Path | None = None,
    out: str | Path | None = None,
    trust: bool = False,
    download: bool = True,
    runtime: str | None = None,
) -> EvalResult:
    """Score trained weights or an exported file on a data set's test split (default: the one they were trained on).

    Writes report.txt, confusion.png and misses.png to ``out`` (default: ``RUN/eval-DATASET``,
    ``WEIGHTS-eval-DATASET`` beside a weights file,
    ``runs/ARCH-TAG-eval-DATASET`` for published weights).  The data directory defaults to the one
    the run was trained with.  ``trust=True`` allows formats whose files can run code (TorchScript, .pt2);
    ``download=False`` raises DatasetNotFound rather than download a missing data set. ``runtime`` scores the model
    in a registered runtime, ``"NAME[:PRECISION]"``, once proved against the file's own (``EvalResult.runtime``
    says how).
    """
    ref = resolve(model)
    run, card = load_runner(ref, trust, runtime=runtime, data_dir=data_dir)
    if dataset is None and (card.dataset is None or card.dataset_is_folder):
        found = f"was trained on the folder {card.dataset}" if card.dataset else "records no data set"
        raise ZooError(f"{ref} {found}; name the data set to score it on: zoo eval {ref} DATASET_OR_FOLDER")
    # A name recorded in the file means a registered data set, never a folder of that name.
    ds = dataset_for_model(dataset, card.input_shape) if dataset else get_registry().dataset(str(card.dataset))
    if (ds.shape, ds.num_classes) != (card.input_shape, card.num_classes):
        raise ZooError(
            f"{ref} was trained on {format_shape(card.input_shape)} images in {card.num_classes} classes; "
            f"{ds.name} has {format_shape(ds.shape)} images in {ds.num_classes}: pick a data set of the same shape"
        )
    if ds.classes != card.classes:
        warnings.warn(
            f"{ds.name}'s classes ({', '.join(ds.classes[:3])}, ...) are not the ones {ref} was trained on "
            f"({', '.join(card.classes[:3])}, ...): the accuracy counts label indices that mean different things",
            DataWarning,
            stacklevel=2,
        )
    images, labels = _test_split(ds, data_dir, ref.data_dir, download)
    split = Split(images, labels)
    # Normalise as the training data was, whatever data set is scored now.
    normalize = Normalizer(card.mean, card.std, torch.device("cpu"), False)
    scored = score(lambda x: torch.from_numpy(run(x.numpy())), split, normalize)
    if out is not None:
        target = Path(out)
    elif ref.kind == "weights":  # not beside their file, in the installation
        target = Path("runs") / f"{ref.path.stem}-eval-{ds.name}"
    elif ref.kind == "run" and ref.run is not None:
        target = ref.run / f"eval-{ds.name}"
    else:
        target = ref.path.with_name(f"{ref.path.stem}-eval-{ds.name}")
    writable_dir(target, "pass --out DIR")
    result = EvalResult(ref.path, ds.name, scored, ds.classes, target, str(run) if runtime else "")
    write_text(target / "report.txt", result.report() + "\n")
    plots.confusion(scored.confusion, ds.classes, target / "confusion.png")
    plots.misses(images, labels, scored.predictions, ds.classes, target / "misses.png")
    return result
