"""Loading a resolved model (zoo.references) into a function in its own runtime (an .onnx file needs onnxruntime
alone) or in a registered runtime once proved against it, or into a torch module."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zoo.card import ModelCard
from zoo.errors import DatasetNotFound, ZooError, describe
from zoo.images import normalize
from zoo.loader import get_registry
from zoo.machine import available_cpus
from zoo.references import ModelRef, resolve
from zoo.registry import DEFAULT_ULPS, Exporter, Runtime

if TYPE_CHECKING:
    from torch import nn

__all__ = ["MAX_TEST_IMAGES", "ProvedRun", "Run", "load", "load_model", "load_runner", "rounding_steps",
           "torch_runner"]  # fmt: skip

Run = Callable[[np.ndarray], np.ndarray]
"""A model as a function from a normalised float32 batch N×C×H×W to scores N×classes."""

FLOAT32_EPS = float(np.finfo(np.float32).eps)
MAX_TEST_IMAGES = 10_000
"""An approximate file, or runtime, is judged on at most this many of the test split's images."""


def rounding_steps(expected: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Each row's largest difference, in float32 rounding steps at the row's scale: its largest output, or 1.

    A float32 graph that fuses or reorders operations rounds differently: its outputs move by a few
    steps of float32 rounding (2^-23 relative) of the values being summed.  The largest output of
    the row stands for those; below 1 the inputs and activations (of order 1 after normalisation) do.
    """
    scale = np.maximum(np.abs(expected).max(axis=1), 1.0)
    return np.abs(got - expected).max(axis=1) / (FLOAT32_EPS * scale)  # type: ignore[no-any-return]


class ProvedRun:
    """A model file run by a registered runtime (``--runtime NAME[:PRECISION]``), proved against the file's own
    runner: a ``Run`` that also says which runtime computes it, in what, and how it was proved."""

    def __init__(self, run: Run, runtime: str, precision: str, proof: str) -> None:
        self.run, self.runtime, self.precision, self.proof = run, runtime, precision, proof

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run(x)

    def __str__(self) -> str:
        return f"{self.runtime} ({self.precision}): {self.proof}"


def load_runner(
    model: str | Path | ModelRef,
    trust: bool = False,
    *,
    runtime: str | None = None,
    data_dir: str | Path | None = None,
) -> tuple[Run, ModelCard]:
    """A function from normalised float32 batches to scores, and the model card, for anything
    ``zoo.references.resolve`` resolves: a run, any exported file, published weights ``ARCH:TAG``.

    Only the file's own runtime is imported: an .onnx file needs onnxruntime, not torch; zoo's own .safetensors
    files load through zoo.checkpoint, whatever exporters are installed.
    A format whose files can run code (TorchScript, .pt2) is loaded only with ``trust=True``.

    ``runtime="NAME[:PRECISION]"`` runs the file in a registered runtime instead (``zoo list`` shows them), once it
    is proved against the file's own runner: a float32 computation within float32 rounding on random inputs, a
    bfloat16, float16 or int8 one by the approximate policy (top-1 agreement, accuracy lost) on up to 10,000
    images of the data set's test split under ``data_dir``. The function returned is then a ``ProvedRun``.
    """
    ref = resolve(model)
    reference, card = _own_runner(ref, trust)
    if runtime is None:
        return reference, card
    chosen, precision = _runtime(runtime, ref)
    try:
        run = chosen.load(ref.path, precision, available_cpus())
    except ZooError:
        raise
    except Exception as exc:
        raise ZooError(f"{ref.path} could not be loaded by {chosen.name} ({describe(exc)[:200]}); "
                       f"run it in its own runtime (leave out --runtime)") from exc  # fmt: skip
    run = _probe(run, card, ref.path)
    proof = _prove(run, reference, card, ref, f"{chosen.name}:{precision}", precision, data_dir)
    return ProvedRun(run, chosen.name, precision, proof), card


def _runtime(spec: str, ref: ModelRef) -> tuple[Runtime, str]:
    """The runtime ``NAME[:PRECISION]`` names and the precision it computes the file in, once it can."""
    registry = get_registry()
    name, _, asked = spec.partition(":")
    chosen = registry.runtime(name)
    fmt = ref.exporter.name if ref.exporter else "safetensors"
    if fmt not in chosen.formats:
        others = [r.name for r in registry.runtimes.values() if fmt in r.formats]
        fix = f"for {fmt}: --runtime {' or '.join(others)}" if others else "leave out --runtime"
        raise ZooError(f"runtime {chosen.name} does not run {fmt} files (it runs {', '.join(chosen.formats)}); {fix}")
    if ref.exporter is not None and ref.exporter.precision == "int8":
        if asked not in ("", "int8"):
            raise ZooError(f"{ref.path} is an int8 file and computes in int8, not {asked}; give --runtime {name}")
        return chosen, "int8"
    precision = asked or chosen.precisions[0]
    if precision not in chosen.precisions:
        raise ZooError(f"runtime {chosen.name} computes in {', '.join(chosen.precisions)}, not {precision!r}; "
                       f"give --runtime {chosen.name}:{chosen.precisions[0]}")  # fmt: skip
    return chosen, precision


def _prove(run: Run, reference: Run, card: ModelCard, ref: ModelRef, name: str, precision: str,
           data_dir: str | Path | None) -> str:  # fmt: skip
    """How ``run`` was proved equivalent to the file's own runner ``reference``; a ZooError where it is not."""
    if precision == "float32":
        rng = np.random.default_rng(0)
        inputs = [np.zeros((1, *card.input_shape), np.float32), rng.standard_normal((1, *card.input_shape), np.float32),
                  rng.standard_normal((64, *card.input_shape), np.float32)]  # fmt: skip
        worst = max(float(rounding_steps(reference(x), np.asarray(run(x))).max()) for x in inputs)
        if not worst <= DEFAULT_ULPS:
            raise ZooError(f"{name} does not compute {ref.path} as its own runtime does: {worst:.4g} float32 rounding "
                           f"steps apart, more than {DEFAULT_ULPS:g}; use another runtime")  # fmt: skip
        return f"within {worst:.0f} float32 rounding steps of the file's own runtime on random inputs"
    policy = ref.exporter if ref.exporter is not None and ref.exporter.proof == "approximate" else Exporter
    images, labels = _test_split(card, name, data_dir or ref.data_dir)
    want = np.concatenate([reference(images[i : i + 256]) for i in range(0, len(images), 256)])
    have = np.concatenate([np.asarray(run(images[i : i + 256])) for i in range(0, len(images), 256)])
    agreement = float((want.argmax(1) == have.argmax(1)).mean())
    drop = float((want.argmax(1) == labels).mean() - (have.argmax(1) == labels).mean())
    said = (f"top class as the file's own runtime on {agreement:.2%} of {len(images):,} test images, "
            f"accuracy {-100 * drop:+.2f} points")  # fmt: skip
    if agreement < policy.min_agreement or drop > policy.max_accuracy_drop + 1e-12:
        raise ZooError(f"{name} is not equivalent on {ref.path}: {said}, where at least {policy.min_agreement:.1%} "
                       f"and at most {policy.max_accuracy_drop:.1%} lost are allowed; use float32")  # fmt: skip
    return said


def _test_split(card: ModelCard, name: str, data_dir: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``MAX_TEST_IMAGES`` normalised test images of the data set the card names, and their labels."""
    from zoo.data import resolve_data_dir

    if card.dataset is None or card.dataset_is_folder:
        trained = "was trained on a folder" if card.dataset else "records no data set"
        raise ZooError(f"{name} computes approximately and is proved on the test split of a registered data set; "
                       f"this model {trained}: use float32")  # fmt: skip
    try:
        images, labels = get_registry().dataset(card.dataset).load("test", resolve_data_dir(data_dir), download=False)
    except DatasetNotFound as exc:
        raise ZooError(f"{name} computes approximately and is proved on {card.dataset}'s test split, not here: "
                       f"{exc}") from exc  # fmt: skip
    return normalize(images[:MAX_TEST_IMAGES].numpy(), card.mean, card.std), labels[:MAX_TEST_IMAGES].numpy()


def _own_runner(ref: ModelRef, trust: bool) -> tuple[Run, ModelCard]:
    """The file's own runner (PyTorch for zoo's checkpoints), probed on one image."""
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
