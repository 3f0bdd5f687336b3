"""Exporting trained models: write each format, prove it equivalent with the format's own runtime, or fail."""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo import runs
from zoo.card import ModelCard, new_card
from zoo.data import Normalizer, resolve_data_dir
from zoo.errors import SettingError, ZooError, describe
from zoo.files import commit, disk_full, read_json, sha256, temp_path, writable_dir, write_json
from zoo.folders import dataset_for_model
from zoo.loader import get_registry
from zoo.references import ModelRef, resolve
from zoo.registry import DEFAULT_ULPS, Exporter
from zoo.runtimes import FLOAT32_EPS, MAX_TEST_IMAGES, load_model, rounding_steps
from zoo.version import __version__

__all__ = [
    "DEFAULT_ULPS",
    "MAX_BATCH",
    "Check",
    "ExportError",
    "ExportResult",
    "check_batch_sizes",
    "export",
    "output_kind",
    "rounding_steps",
    "top1_disagreements",
]


class ExportError(ZooError):
    """An exported file is not equivalent to the PyTorch model; it was not kept."""

    def __init__(self, message: str, result: ExportResult | None = None) -> None:
        super().__init__(message)
        self.result = result


def top1_disagreements(expected: np.ndarray, got: np.ndarray, ulps: float) -> int:
    """Rows whose top class differs although the model's two best scores are further apart than the tolerance."""
    scale = np.maximum(np.abs(expected).max(axis=1), 1.0)
    best_two = np.sort(expected, axis=1)[:, -2:] if expected.shape[1] > 1 else np.zeros((len(expected), 2))
    clear = best_two[:, 1] - best_two[:, 0] > 2 * ulps * FLOAT32_EPS * scale
    return int((clear & (got.argmax(1) != expected.argmax(1))).sum())


@dataclass
class Check:
    """One comparison of an exported file's outputs with the model's, on one batch."""

    format: str
    inputs: str
    batch_size: int
    max_abs: float
    ulps: float
    """The largest difference in float32 rounding steps at the row's scale (see ``rounding_steps``)."""
    top1_agreement: float
    passed: bool
    accuracy_change: float | None = None
    """Test accuracy of the file minus the model's (a fraction), where labelled images judged it."""


@dataclass
class ExportResult:
    out: Path
    files: dict[str, Path] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    """Formats not written, and why."""
    unproven: set[str] = field(default_factory=set)
    """The formats among ``failures`` that were written and found not equivalent (the others could not be written)."""

    def table(self) -> str:
        width = max([12, *(len(c.format) for c in self.checks)])  # plugin formats may have longer names
        lines = [f"{'format':<{width}} {'inputs':<7} {'batch':>5} {'max abs':>10} {'ulps':>9} {'top-1':>7} "
                 f"{'accuracy':>9}  result"]  # fmt: skip
        for c in self.checks:  # an approximate file is judged by agreement and accuracy: its rounding steps say nothing
            change = "" if c.accuracy_change is None else f"{c.accuracy_change * 100:+.2f} pt"
            ulps = "-" if c.accuracy_change is not None else f"{c.ulps:.1f}"
            lines.append(
                f"{c.format:<{width}} {c.inputs:<7} {c.batch_size:>5} {c.max_abs:>10.2e} {ulps:>9} "
                f"{c.top1_agreement:>7.2%} {change:>9}  {'ok' if c.passed else 'FAILED'}"
            )
        return "\n".join(lines)


@dataclass
class _Inputs:
    """What the files are proved on: batches of real and random images (exact and float32 formats), the test
    split's labelled images (approximate formats), and training images to calibrate on."""

    batches: list[tuple[str, np.ndarray]]
    test: tuple[np.ndarray, np.ndarray] | None = None
    calibration: torch.Tensor | None = None
    _scores: np.ndarray | None = None

    def model_scores(self, model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
        """The model's outputs on the test images: computed once, for every approximate format judged on them."""
        if self._scores is None:
            # channels-last: twice as fast on the CPU for these convolutions, and still the float32 model
            fast, layout = copy.deepcopy(model).to(memory_format=torch.channels_last), torch.channels_last
            batches = [torch.from_numpy(images[i : i + 256]).contiguous(memory_format=layout)
                       for i in range(0, len(images), 256)]  # fmt: skip
            with torch.inference_mode():
                self._scores = np.concatenate([fast(x).float().numpy() for x in batches])
        return self._scores


def _source(
    target: str | Path | ModelRef, weights: str | None, runs_dir: Path, untrained: bool, notices: list[str]
) -> tuple[torch.nn.Module, ModelCard, str, Path, ModelRef | None]:
    """The model, its card, a name for the files, where they go by default, and the reference it came from.

    From a weights file (beside it), a run directory or the architecture's newest run (``RUN/export``),
    published weights ``ARCH:TAG`` or, for an architecture without runs, its default ones (``exports/ARCH-TAG``),
    or fresh weights (``exports/ARCH-untrained``).
    """
    if untrained and weights is None and not isinstance(target, ModelRef):
        arch = get_registry().architecture(str(target))
        torch.manual_seed(0)
        model = arch.build().eval()
        return model, new_card(arch), f"{arch.name}-untrained", Path("exports") / f"{arch.name}-untrained", None
    ref = resolve(weights or target, runs_dir)
    if ref.note:
        notices.append(ref.note)
    model, card = load_model(ref)
    if ref.weights is not None:
        name = f"{ref.weights.architecture}-{ref.weights.tag}"
        return model, card, name, Path("exports") / name, ref
    if ref.kind == "run" and ref.run is not None:
        return model, card, card.architecture, ref.run / "export", ref
    return model, card, card.architecture, ref.path.parent, ref


def _inputs(
    card: ModelCard,
    batch_sizes: Sequence[int],
    dataset: str | None,
    data_dir: str | Path | None,
    notices: list[str],
    calibration: int,
) -> _Inputs:
    """Real test images where they are at hand, and random ones in the normalised range; with ``calibration``
    (an approximate format's ``calibration_images``), the labelled test split and that many training images too.

    The images are ``dataset``'s (a name or a folder), else those of the registered data set the model
    was trained on; a folder recorded in the file is read only when named.  Without them, ``notices`` says so.
    """
    shape = card.input_shape
    largest = max(batch_sizes)
    generator = torch.Generator().manual_seed(0)
    inputs = _Inputs([])
    real = None
    if dataset is None and card.dataset_is_folder:
        notices.append(
            f"compared on random inputs only: the model was trained on the folder {card.dataset}; "
            f"pass --dataset {card.dataset} to compare on its test images too"
        )
    elif dataset or card.dataset:
        try:
            found = dataset_for_model(dataset, shape) if dataset else get_registry().dataset(str(card.dataset))
            root = resolve_data_dir(data_dir)
            images, labels = found.load("test", root, download=False)
            train = found.load("train", root, download=False)[0] if calibration else None
        except ZooError as exc:
            notices.append(f"compared on random inputs only: {exc}")
        else:
            normalize = Normalizer(card.mean, card.std, torch.device("cpu"), channels_last=False)
            real = normalize(images[:largest]).numpy()
            if calibration and train is not None:
                test = normalize(images[:MAX_TEST_IMAGES]).numpy(), labels[:MAX_TEST_IMAGES].numpy()
                picked = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:calibration]
                inputs = _Inputs([], test, normalize(train[picked]))
    for b in batch_sizes:
        if real is not None:
            inputs.batches.append(("real", np.ascontiguousarray(real[:b])))
        inputs.batches.append(("random", torch.randn(b, *shape, generator=generator).numpy()))
    return inputs


def _verify(
    exporter: Exporter,
    path: Path,
    model: torch.nn.Module,
    written: dict[str, Any],
    inputs: _Inputs,
    ulps: float,
) -> list[Check]:
    """Load the written file with its own runtime, check it gives back the metadata ``written`` into it, and compare
    its outputs with the model's on every batch.

    An exact format must be bit-identical.  A float32 one must stay within ``ulps`` rounding steps
    of every output row, and agree on the top class wherever the model's top two are further apart.
    An approximate one is judged on the labelled test images alone (see ``_judge``).
    """
    run, meta = exporter.load(path)
    changed = [k for k, v in written.items() if meta.get(k) != v]
    if changed:
        raise ExportError(
            f"{exporter.name}: the file's runner does not give back the metadata its writer was given "
            f"({', '.join(changed)} differ); it must return the same dict of JSON values"
        )
    if exporter.proof == "approximate":
        return [_judge(exporter, run, model, inputs)]
    checks = []
    for kind, x in inputs.batches:
        with torch.inference_mode():
            expected = model(torch.from_numpy(x)).float().numpy()
        got = np.asarray(run(x), dtype=np.float32)
        if got.shape != expected.shape:
            checks.append(Check(exporter.name, kind, len(x), float("inf"), float("inf"), 0.0, False))
            continue
        steps = float(rounding_steps(expected, got).max())
        if exporter.proof == "exact":
            passed = bool((got == expected).all())
        else:
            passed = steps <= ulps and top1_disagreements(expected, got, ulps) == 0
        agreement = float((got.argmax(1) == expected.argmax(1)).mean())
        checks.append(Check(exporter.name, kind, len(x), float(np.abs(got - expected).max()), steps, agreement, passed))
    return checks


def _judge(exporter: Exporter, run: Any, model: torch.nn.Module, inputs: _Inputs) -> Check:
    """An approximate file against the model on the test split: the share of images where both pick the same
    class, and the change in accuracy.  Random inputs say nothing about a quantized model, so none are used."""
    if inputs.test is None:
        raise ExportError(
            f"{exporter.name} is approximate and is proved on the test split's images, which are not at hand; "
            f"pass --data-dir (or --dataset) where they are"
        )
    images, labels = inputs.test
    want = inputs.model_scores(model, images)
    have = np.concatenate([np.asarray(run(images[i : i + 256]), dtype=np.float32) for i in range(0, len(images), 256)])
    if want.shape != have.shape:
        return Check(exporter.name, "test", len(images), float("inf"), float("inf"), 0.0, False)
    agreement = float((want.argmax(1) == have.argmax(1)).mean())
    change = float((have.argmax(1) == labels).mean() - (want.argmax(1) == labels).mean())
    passed = agreement >= exporter.min_agreement and -change <= exporter.max_accuracy_drop + 1e-12
    steps = float(rounding_steps(want, have).max())
    return Check(exporter.name, "test", len(images), float(np.abs(have - want).max()), steps, agreement, passed,
                 change)  # fmt: skip


def _thresholds(exporters: list[Exporter], **given: Mapping[str, float]) -> list[Exporter]:
    """``exporters``, the approximate ones with the thresholds ``given`` per format name (or alias)."""
    registry = get_registry()
    chosen = {e.name: e for e in exporters}
    settings: dict[str, dict[str, float]] = {}
    for setting, values in given.items():
        for name, value in values.items():
            try:
                fmt = registry.exporter(name).name
            except ZooError as exc:
                raise SettingError(setting, f"names {name!r}: {exc}") from None
            if settings.get(fmt, {}).get(setting, value) != value:
                raise SettingError(setting, f"gives {fmt} two values")
            if fmt not in chosen or chosen[fmt].proof != "approximate":
                approximate = ", ".join(e.name for e in exporters if e.proof == "approximate") or "none"
                raise SettingError(setting, f"names {fmt}, which is not an approximate format being exported "
                                            f"(those here: {approximate})")  # fmt: skip
            settings.setdefault(fmt, {})[setting] = value
    tuned = []
    for exporter in exporters:
        if exporter.name in settings:
            provider, exporter = exporter.provided_by, replace(exporter, **settings[exporter.name])  # type: ignore[arg-type]
            object.__setattr__(exporter, "provided_by", provider)  # not a field: replace() leaves it out
            try:
                exporter.validate()
            except ValueError as exc:
                raise SettingError(next(iter(settings[exporter.name])), f"for {exporter.name}: {exc}") from None
        tuned.append(exporter)
    return tuned


def _failure(exporter: Exporter, failed: list[Check], ulps: float) -> str:
    if exporter.proof == "approximate":
        c = failed[0]
        change = "" if c.accuracy_change is None else f", accuracy {c.accuracy_change * 100:+.2f} points"
        options = [f"--min-agreement {exporter.name}={math.floor(c.top1_agreement * 1000) / 1000:g}"]
        if c.accuracy_change is not None and -c.accuracy_change > exporter.max_accuracy_drop:
            options.append(f"--max-accuracy-drop {exporter.name}={math.ceil(-c.accuracy_change * 1000) / 1000:g}")
        return (f"{exporter.name} on {c.batch_size} test images: top-1 agreement {c.top1_agreement:.2%}{change}; "
                f"needed: {exporter.describe_proof()} (to accept this file: {' '.join(options)})")  # fmt: skip
    sizes = ", ".join(str(b) for b in sorted({c.batch_size for c in failed}))
    worst = max(c.ulps for c in failed)
    allowed = "0" if exporter.proof == "exact" else f"{ulps:g}"
    return f"{exporter.name} at batch size {sizes} ({worst:.3g} float32 rounding steps; allowed: {allowed})"


@contextlib.contextmanager
def _warnings_named(prefix: str) -> Iterator[None]:
    """Warnings raised inside (a tracer's, say, from a plugin's model), each said once and prefixed with the model and
    format they came from: writing and proving a file can trace the model several times."""
    with warnings.catch_warnings(record=True) as caught:  # the filters in force still apply: ignored stays ignored
        yield
    said = set()
    for w in caught:
        if (w.category, str(w.message)) not in said:
            said.add((w.category, str(w.message)))
            warnings.warn(f"{prefix}: {w.message}", w.category, stacklevel=3)


def output_kind(model: torch.nn.Module, x: torch.Tensor) -> str:
    """What the model's scores are, read off its outputs on ``x``: ``log_probabilities`` (each row's exponentials
    sum to 1, as after ``log_softmax``), ``probabilities`` (non-negative rows summing to 1) or ``logits``."""
    with torch.inference_mode():
        out = model(x).double()
    ones = torch.ones(len(out), dtype=torch.float64)
    if (out <= 1e-6).all() and torch.allclose(out.exp().sum(1), ones, atol=1e-4):
        return "log_probabilities"
    if (out >= 0).all() and torch.allclose(out.sum(1), ones, atol=1e-4):
        return "probabilities"
    return "logits"


def _record(exporter: Exporter, ulps: float, scores: str) -> dict[str, Any]:
    """What an exported file says about itself (``export`` in its metadata): its format, precision, what its
    scores are, and the proof it had to pass. The measured result is the manifest's (``verification``): it varies
    with the CPU that ran the proof, and the same weights must give the same bytes."""
    return {"format": exporter.name, "precision": exporter.precision, "scores": scores,
            "proof": _proof(exporter, ulps)}  # fmt: skip


def _proof(exporter: Exporter, ulps: float) -> dict[str, Any]:
    """How the file was proved, as the manifest records it."""
    if exporter.proof == "float32":
        return {"policy": "float32", "rounding_steps": ulps}
    if exporter.proof == "approximate":
        return {"policy": "approximate", "min_agreement": exporter.min_agreement,
                "max_accuracy_drop": exporter.max_accuracy_drop}  # fmt: skip
    return {"policy": "exact"}


ONNX_OPSETS = range(7, 21)
"""The opsets torch's TorchScript-based ONNX exporter writes."""
MAX_BATCH = 65_536
MAX_INPUT_BYTES = 2 << 30


def check_batch_sizes(batch_sizes: Sequence[int], shape: Sequence[int] | None = None) -> None:
    """Refuse batch sizes outside 1..MAX_BATCH, or whose input of ``shape`` alone would take more than
    MAX_INPUT_BYTES (a file declares its shape), before anything is allocated."""
    if not batch_sizes or not all(isinstance(b, int) and 1 <= b <= MAX_BATCH for b in batch_sizes):
        raise SettingError("batch_sizes", f"must be integers from 1 to {MAX_BATCH:,}, such as 1,2,64")
    biggest = max(batch_sizes) * math.prod(shape or ()) * 4
    if shape and biggest > MAX_INPUT_BYTES:
        raise SettingError("batch_sizes", f"{max(batch_sizes):,} images of {'x'.join(map(str, shape))} take "
                                          f"{biggest / 2**30:.1f} GiB before the model runs (at most "
                                          f"{MAX_INPUT_BYTES / 2**30:g} GiB); pass smaller --batch-sizes")  # fmt: skip


def _earlier_manifest(manifest: Path) -> dict[str, Any]:
    """The manifest an earlier export wrote into the folder ({} if none); one zoo did not write is never replaced."""
    if not manifest.exists() and not manifest.is_symlink():
        return {}
    fix = "export into another --out, or move it away"
    try:
        earlier = read_json(manifest)
    except ZooError as exc:
        raise ZooError(f"{exc}, so it is no manifest zoo wrote; {fix}") from None
    files = earlier.get("files") if isinstance(earlier, dict) else None
    versions = earlier.get("versions") if isinstance(earlier, dict) else None
    if not (isinstance(files, dict) and isinstance(versions, dict) and "zoo" in versions):
        raise ZooError(f"{manifest} is not a manifest zoo wrote, and zoo will not replace it; {fix}")
    if not all(isinstance(e, dict) and Path(str(e.get("path"))).name == e.get("path") for e in files.values()):
        raise ZooError(f"{manifest} is damaged (a file entry without a path); {fix}")
    return dict(earlier)


def export(
    target: str | Path | ModelRef,
    formats: Sequence[str] | str | None = None,
    *,
    weights: str | None = None,
    out: str | Path | None = None,
    runs_dir: str | Path = runs.DEFAULT_RUNS_DIR,
    opset: int = 17,
    ulps: float = DEFAULT_ULPS,
    batch_sizes: Sequence[int] = (1, 2, 64),
    force: bool = False,
    untrained: bool = False,
    data_dir: str | Path | None = None,
    dataset: str | None = None,
    min_agreement: Mapping[str, float] | None = None,
    max_accuracy_drop: Mapping[str, float] | None = None,
) -> ExportResult:
    """Export ``target`` (a run directory, a weights file, or an architecture's newest run) to ``formats``.

    Each file is written under a temporary name, loaded back with its own runtime and
    compared with the PyTorch model on every batch; only a file that passes is renamed
    into place.  Raises ``ExportError`` naming each format and batch size that failed.

    ``min_agreement`` and ``max_accuracy_drop`` ({format: fraction}) replace an approximate format's own
    thresholds for this export; the manifest records the ones each file was proved with.
    """
    registry = get_registry()
    if isinstance(formats, str):  # one format named on its own
        formats = [formats]
    if formats:
        exporters = [registry.exporter(f) for f in formats]
    else:  # approximate formats need the data set's images: written when named
        exporters = [e for e in registry.exporters.values() if e.proof != "approximate"]
    exporters = _thresholds(exporters, min_agreement=min_agreement or {}, max_accuracy_drop=max_accuracy_drop or {})
    check_batch_sizes(batch_sizes)
    if not (isinstance(opset, int) and ONNX_OPSETS[0] <= opset <= ONNX_OPSETS[-1]):
        raise SettingError("opset", f"must be an ONNX opset from {ONNX_OPSETS[0]} to {ONNX_OPSETS[-1]}, such as 17")
    if not (isinstance(ulps, int | float) and math.isfinite(ulps) and ulps >= 0):
        raise SettingError("ulps", f"must be a finite number of float32 rounding steps, such as {DEFAULT_ULPS:g}")
    notices: list[str] = []
    with _warnings_named(str(weights or target)):  # the model runs once when built, and once to read its scores
        model, card, name, default_out, origin = _source(target, weights, Path(runs_dir), untrained, notices)
        model.eval()
        scores = output_kind(model, torch.randn(4, *card.input_shape, generator=torch.Generator().manual_seed(0)))
    check_batch_sizes(batch_sizes, card.input_shape)
    card = replace(card, opset=opset, zoo_version=__version__)
    result = ExportResult(Path(out) if out else default_out, notices=notices)
    paths = {e.name: result.out / f"{name}{e.suffix}" for e in exporters}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not force:
        raise ZooError(f"{', '.join(existing)} already exist; pass --force to overwrite, or --out DIR")
    manifest = result.out / "manifest.json"
    earlier = _earlier_manifest(manifest)  # checked before anything is written
    writable_dir(result.out, "pass --out DIR")

    data_dir = data_dir or (origin.data_dir if origin else None)
    calibration = max((e.calibration_images for e in exporters if e.proof == "approximate"), default=0)
    inputs = _inputs(card, batch_sizes, dataset, data_dir, result.notices, calibration)
    example = inputs.calibration if inputs.calibration is not None else torch.zeros(2, *card.input_shape)
    with contextlib.ExitStack() as cleanup:
        proven: dict[str, Path] = {}  # each format's proved file, under its temporary name until all are done
        for exporter in exporters:
            tmp = temp_path(paths[exporter.name])
            cleanup.callback(tmp.unlink, missing_ok=True)  # a file not proved never lands under its final name
            written = replace(card, opset=max(opset, exporter.min_opset))
            meta = {**written.to_json(), "export": _record(exporter, ulps, scores)}
            with _warnings_named(f"{card.architecture} as {exporter.name}"):
                try:
                    exporter.write(model, example[: exporter.calibration_images], meta, tmp, written.opset or opset)
                except Exception as exc:
                    why = disk_full(exc, paths[exporter.name]) or describe(exc)[:300]
                    result.failures[exporter.name] = f"{exporter.name} could not be written: {why}"
                    continue
                try:
                    checks = _verify(exporter, tmp, model, meta, inputs, ulps)
                except ExportError as exc:
                    result.failures[exporter.name] = str(exc)
                    continue
                except Exception as exc:
                    result.failures[exporter.name] = f"{exporter.name} could not be run: {describe(exc)[:300]}"
                    continue
            result.checks += checks
            if failed := [c for c in checks if not c.passed]:
                result.failures[exporter.name] = _failure(exporter, failed, ulps)
                result.unproven.add(exporter.name)
                continue
            proven[exporter.name] = tmp
            if exporter.notice:
                result.notices.append(exporter.notice)
        _land(proven, paths, earlier, manifest, result, card, exporters, ulps)
    if result.failures:
        unproven = [m for f, m in result.failures.items() if f in result.unproven]
        others = [m for f, m in result.failures.items() if f not in result.unproven]
        said = ([f"not equivalent, so not written: {'; '.join(unproven)}"] if unproven else []) + others
        raise ExportError(f"{'; '.join(said)} (see {manifest})", result)
    return result


def _land(
    proven: dict[str, Path],
    paths: dict[str, Path],
    earlier: dict[str, Any],
    manifest: Path,
    result: ExportResult,
    card: ModelCard,
    exporters: list[Exporter],
    ulps: float,
) -> None:
    """Move the proved files into place with the manifest that lists them, so that a kill at any point leaves each
    file with its own entry or with none: the entries of files about to be replaced go first, the files move,
    then the new manifest lands."""
    import onnx
    import onnxruntime

    # Formats exported earlier into the same folder, and not redone now, stay in the manifest.
    # A format that was redone now and failed keeps its earlier file, and so its entry.
    earlier_files = earlier.get("files", {})
    kept = {f: e for f, e in earlier_files.items() if f not in proven and (result.out / e["path"]).is_file()}
    kept_checks = [c for c in earlier.get("verification", []) if isinstance(c, dict) and c.get("format") in kept]
    head = {k: v for k, v in card.to_json().items() if k not in ("config", "metrics")}
    versions = {"zoo": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__}  # fmt: skip
    if any(f in earlier_files for f in proven):
        write_json(manifest, {**earlier, "files": kept, "verification": kept_checks})
    for fmt, tmp in proven.items():
        commit(tmp, paths[fmt])
        result.files[fmt] = paths[fmt]
    entries = {
        e.name: {"path": p.name, "sha256": sha256(p), "bytes": p.stat().st_size, "proof": _proof(e, ulps)}
        for e in exporters
        if (p := result.files.get(e.name))
    }
    write_json(manifest, {**head, "versions": versions, "files": {**kept, **entries},
                          "verification": [*kept_checks, *(asdict(c) for c in result.checks)]})  # fmt: skip
