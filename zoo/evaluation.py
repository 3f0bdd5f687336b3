"""Scoring a model on a split: loss, accuracy, confusion matrix, per-class precision and recall."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from zoo.data import Normalizer, Split, batches

__all__ = ["Evaluation", "evaluate", "report"]


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
def evaluate(
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
