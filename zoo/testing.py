"""The conformance kit: checks that a plugin's architectures, data sets and export formats work with zoo.

Use it from a plugin's own tests, one pytest item per check::

    import pytest
    from zoo import testing

    @pytest.mark.parametrize("case", testing.cases("zoo-mynets"), ids=str)
    def test_conforms(case: testing.Case) -> None:
        case.assert_passes()

or all at once with ``testing.assert_conforms("zoo-mynets")``, or from the command line: ``zoo check zoo-mynets``.
A name is a distribution, an entry point, an architecture, a data set or an export format.
"""

from __future__ import annotations

import math
import re
import tempfile
import unittest
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from zoo.errors import DatasetNotFound, SettingError, UnknownName, ZooError
from zoo.loader import get_registry
from zoo.registry import DEFAULT_ULPS, Architecture, Dataset, Exporter, Registry, Runtime, Weights, format_shape

__all__ = [
    "REFERENCE_ARCHITECTURES",
    "Case",
    "Finding",
    "assert_conforms",
    "cases",
    "check",
    "check_architecture",
    "check_dataset",
    "report",
]

Status = Literal["passed", "failed", "skipped"]

REFERENCE_ARCHITECTURES = ("mnist_cnn6_16", "lenet_bn")
"""Built-in architectures a plugin's export formats are proved on: convolutions, pooling, linear layers, batch norm."""


@dataclass(frozen=True)
class Finding:
    subject: str
    check: str
    status: Status
    detail: str = ""
    """What went wrong and how to fix it, or why the check was skipped; empty when it passed."""

    @property
    def ok(self) -> bool:
        """Not failed (a skipped check is ok unless the kit runs strict)."""
        return self.status != "failed"


class _Skip(Exception):
    """The check cannot run here (its message says why); not a failure."""


class _Fail(Exception):
    """The check failed; its message is the whole explanation, advice included."""


def _oneline(exc: BaseException, limit: int = 300) -> str:
    return " ".join(str(exc).split())[:limit]


class Case:
    """One check, run on first use and remembered: one pytest item each (see ``cases``).

    ``needs`` are the checks it builds on: when one of them did not pass, this one is skipped rather than
    failing again for the same reason.
    """

    def __init__(
        self, subject: str, check: str, fix: str, test: Callable[[], object], needs: Sequence[Case] = ()
    ) -> None:
        self.subject, self.check, self.fix, self.test, self.needs = subject, check, fix, test, tuple(needs)
        self._finding: Finding | None = None

    def __str__(self) -> str:
        return f"{self.subject}: {self.check}"

    def __repr__(self) -> str:
        return f"<Case {self}>"

    def run(self) -> Finding:
        if self._finding is None:
            blocked = next((n for n in self.needs if n.run().status != "passed"), None)
            if blocked is not None:
                root = blocked.run()  # the first check that did not pass, through any chain of skips
                known = root.status == "skipped" and root.detail.startswith("not run: ")
                self._finding = self._found("skipped", root.detail if known else f"not run: {root.check} {root.status}")
            else:
                self._finding = self._run()
        return self._finding

    def _found(self, status: Status, detail: str = "") -> Finding:
        return Finding(self.subject, self.check, status, detail)

    def _run(self) -> Finding:
        """Run ``test``: False or an exception fails the check, with ``fix`` as the advice."""
        try:
            result = self.test()
        except _Skip as exc:
            return self._found("skipped", str(exc))
        except _Fail as exc:
            return self._found("failed", str(exc))
        except ZooError as exc:  # its message says what to fix
            return self._found("failed", _oneline(exc))
        except Exception as exc:
            return self._found("failed", f"{type(exc).__name__}: {_oneline(exc)}; {self.fix}")
        return self._found("failed", self.fix) if result is False else self._found("passed")

    def assert_passes(self, strict: bool = False) -> None:
        """Raise AssertionError if the check failed (or, with ``strict``, was skipped); skip a test if skipped."""
        finding = self.run()
        if finding.status == "failed" or (strict and finding.status == "skipped"):
            raise AssertionError(f"{self}: {finding.status}: {finding.detail}")
        if finding.status == "skipped":
            raise unittest.SkipTest(finding.detail)  # pytest reports it as skipped


def _always(result: bool) -> Callable[[], bool]:
    """A check whose outcome is already known (the plugin's loading, done by the registry)."""
    return lambda: result


def _references(item: Architecture | Dataset | Exporter | Runtime) -> Case:
    """Its ``"module:attribute"`` strings import, as they will on first use."""
    refs = " and ".join(item.references)
    return Case(
        f"{item.kind} {item.name}",
        f"{refs} import",
        "fix the reference",
        lambda: [item.resolve(attr) for attr in item.references],
    )


GRADIENT_STEPS = 3
"""Optimizer steps within which every parameter must change: a layer behind one initialised to zero (torchvision's
``zero_init_residual``, timm's ``zero_init_last``) gets a zero gradient at the first step and a real one after."""


def _gradients(arch: Architecture) -> None:
    """Every parameter gets a finite gradient at each step and changes within GRADIENT_STEPS optimizer steps."""
    import torch

    torch.manual_seed(0)
    model = arch.build()
    x, y = torch.randn(8, *arch.input_shape), torch.arange(8) % arch.num_classes
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    before = {name: p.detach().clone() for name, p in params.items()}
    optimizer = torch.optim.Adam(params.values(), lr=1e-3)
    never, broken = set(params), set()
    for _ in range(GRADIENT_STEPS):
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
        broken |= {n for n, p in params.items() if p.grad is not None and not bool(torch.isfinite(p.grad).all())}
        never -= {n for n, p in params.items() if p.grad is not None}
        optimizer.step()
    if broken:
        raise _Fail(f"non-finite gradients reach {_names(broken, params)}; check that nothing divides by zero "
                    f"or takes the log of zero")  # fmt: skip
    if never:
        raise _Fail(f"no gradient reaches {_names(never, params)}; check that forward uses every layer and "
                    f"does not detach")  # fmt: skip
    still = {n for n, p in params.items() if torch.equal(p.detach(), before[n])}
    if still:
        raise _Fail(f"{_names(still, params)} did not change in {GRADIENT_STEPS} optimizer steps: their gradient "
                    f"stays zero; check for a ReLU that never fires or a layer multiplied by a constant "
                    f"zero")  # fmt: skip


def _names(chosen: set[str], order: Mapping[str, object]) -> str:
    """The parameters ``chosen``, in the model's order, the first six by name."""
    names = [n for n in order if n in chosen]
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def _learns(arch: Architecture) -> bool:
    import torch

    torch.manual_seed(0)
    model = arch.build()
    x, y = torch.randn(16, *arch.input_shape), torch.randint(0, arch.num_classes, (16,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        losses.append(loss.item())
    return losses[-1] < losses[0]


def _parity(arch: str, exporter: Exporter, ulps: float, fix: str) -> None:
    """Export a fresh ``arch`` (seed 0) to ``exporter``'s format, the way `zoo export` does, in a temporary folder."""
    from zoo.exporting import ExportError, export

    with tempfile.TemporaryDirectory() as out:
        try:
            export(arch, [exporter.name], untrained=True, out=out, ulps=ulps)
        except Exception as exc:
            failed = (
                [c for c in exc.result.checks if not c.passed] if isinstance(exc, ExportError) and exc.result else []
            )
            worst = max((c.ulps for c in failed), default=math.inf)
            if failed and math.isfinite(worst):  # it ran, and its outputs are off: say by how much
                if exporter.proof == "exact":
                    raise _Fail(
                        f"outputs differ from the model's by up to {worst:.3g} float32 rounding steps; "
                        f"{exporter.name} is declared exact, so they must be bit-identical"
                    ) from None
                raise _Fail(
                    f"outputs differ from the model's by up to {worst:.3g} float32 rounding steps, "
                    f"{ulps:g} allowed; if that is the format's precision, allow more with "
                    f"`zoo check --ulps {exporter.name}=N` (tolerances={{{exporter.name!r}: N}})"
                ) from None
            # The folder is gone when the user reads this: name no file in it.
            text = re.sub(r" \(see [^)]*manifest\.json\)", "", " ".join(str(exc).split())).replace(out, "<tmp>")
            if isinstance(exc, ExportError):
                text = text.removeprefix("not equivalent, so not written: ")
            else:
                text = f"{type(exc).__name__}: {text}"
            raise _Fail(f"{text[:300]}; {fix}") from None


def _round_trip(arch: Architecture, exporter: Exporter) -> None:
    """Write an untrained model and run the file: an approximate format's accuracy is judged by `zoo export` on a
    trained model's test split, which the kit does not have; what the file carries and returns, it can check."""
    import numpy as np
    import torch

    from zoo.card import new_card

    torch.manual_seed(0)
    model, meta = arch.build().eval(), new_card(arch).to_json()
    x = torch.randn(64, *arch.input_shape)
    with tempfile.TemporaryDirectory() as out:
        path = Path(out) / f"model{exporter.suffix}"
        exporter.write(model, x, meta, path, 17)
        run, found = exporter.load(path)
        scores = np.asarray(run(x[:2].numpy()))
    if found != meta:
        raise _Fail("the runner does not give back the metadata the writer was given; it must return the same dict")
    if scores.shape != (2, arch.num_classes):
        raise _Fail(f"the file gives scores of shape {scores.shape} for 2 images, not (2, {arch.num_classes})")


def _any_dataset(registry: Registry, arch: Architecture) -> Dataset:
    recipe_set = arch.default_recipe.dataset
    if recipe_set in registry.datasets:
        return registry.datasets[recipe_set]
    return next(iter(registry.datasets.values()))


def _architecture_cases(arch: Architecture, registry: Registry, tolerances: Mapping[str, float]) -> list[Case]:
    from zoo.training import resolve_config

    case = partial(Case, f"architecture {arch.name}")
    found = [
        case(
            "metadata",
            "give a summary, a C×H×W input_shape and num_classes >= 2",
            lambda: (
                bool(arch.summary)
                and len(arch.input_shape) == 3
                and min(arch.input_shape) > 0
                and arch.num_classes >= 2
            ),
        ),
    ]
    for label, recipe in (("default", arch.default_recipe), ("tutorial", arch.tutorial_recipe)):
        if recipe is not None:
            found.append(
                case(
                    f"{label} recipe",
                    "fix the Recipe's values (see the error)",
                    partial(resolve_config, arch, _any_dataset(registry, arch), label),
                )
            )
    shape_fix = "the builder must honour input_shape and num_classes"
    imports = _references(arch)
    builds = case(
        f"builds ({format_shape(arch.input_shape)}, {arch.num_classes} classes)",
        "the builder must return an nn.Module mapping N×C×H×W images to N×num_classes scores",
        partial(arch.build, arch.input_shape, arch.num_classes),
        needs=[imports],
    )
    found += [imports, builds]
    targets = [(f"builds for {ds.name}", ds.shape, ds.num_classes) for ds in registry.datasets.values()]
    targets.append(("honours num_classes", arch.input_shape, 3))
    for label, shape, classes in targets:
        found.append(
            case(
                f"{label} ({format_shape(shape)}, {classes} classes)",
                shape_fix,
                partial(arch.build, shape, classes),
                needs=[builds],
            )
        )
    found.append(
        case(
            f"every parameter gets finite gradients and changes within {GRADIENT_STEPS} steps",
            "check forward and the builder",
            partial(_gradients, arch),
            needs=[builds],
        )
    )
    found.append(
        case(
            "ten training steps on a fixed batch lower the loss",
            "check that forward uses every layer and returns scores, not argmax",
            partial(_learns, arch),
            needs=[builds],
        )
    )
    trace_fix = "avoid data-dependent control flow and in-place changes to the input in forward"
    for fmt, exporter in registry.exporters.items():
        if exporter.proof == "approximate":  # judged on a trained model's test split: see _exporter_cases
            continue
        ulps = tolerances.get(fmt, DEFAULT_ULPS)
        found.append(
            case(
                f"exports to {fmt} with parity",
                trace_fix,
                partial(_parity, arch.name, exporter, ulps, trace_fix),
                needs=[builds],
            )
        )
    return found


def _exporter_cases(exporter: Exporter, registry: Registry, tolerances: Mapping[str, float]) -> list[Case]:
    fix = "the runner must load what the writer wrote and give back the model's scores and the metadata it was given"
    ulps = tolerances.get(exporter.name, DEFAULT_ULPS)
    imports = _references(exporter)
    if exporter.proof == "approximate":
        return [imports] + [
            Case(
                f"export format {exporter.name}",
                f"round trip of untrained {name}: metadata and output shape",
                fix,
                partial(_round_trip, registry.architectures[name], exporter),
                needs=[imports],
            )
            for name in REFERENCE_ARCHITECTURES
            if name in registry.architectures
        ]
    return [imports] + [
        Case(
            f"export format {exporter.name}",
            f"round trip of untrained {name} with parity",
            fix,
            partial(_parity, name, exporter, ulps, fix),
            needs=[imports],
        )
        for name in REFERENCE_ARCHITECTURES
        if name in registry.architectures
    ]


def _runtime_cases(runtime: Runtime, registry: Registry) -> list[Case]:
    """Each float32 format it runs, on untrained reference architectures, proved as ``--runtime`` proves it."""
    imports = _references(runtime)
    formats = [f for f in runtime.formats if f in registry.exporters and registry.exporters[f].proof != "approximate"]
    return [imports] + [
        Case(
            f"runtime {runtime.name}",
            f"runs {fmt} files of untrained {name} as their own runtime does",
            "the loader must compute what the format's runner computes, in the precision it is given",
            partial(_runtime_parity, runtime, name, fmt),
            needs=[imports],
        )
        for fmt in formats
        for name in REFERENCE_ARCHITECTURES
        if name in registry.architectures
    ]


def _runtime_parity(runtime: Runtime, arch: str, fmt: str) -> None:
    from zoo.exporting import export
    from zoo.runtimes import load_runner

    with tempfile.TemporaryDirectory() as out:
        path = export(arch, [fmt], untrained=True, out=out).files[fmt]
        try:
            load_runner(path, trust=True, runtime=runtime.name)
        except ZooError as exc:
            raise _Fail(" ".join(str(exc).split()).replace(out, "<tmp>")[:300]) from None


def _weights_file(w: Weights) -> None:
    """The record's file is there (a download already in the cache), with the sha256 and size recorded."""
    from zoo import weights

    if w.url and not weights.cached_file(w).is_file():
        raise _Skip(f"not downloaded here; `zoo weights {w.name} --fetch` downloads it")
    path = weights.fetch(w, progress=False)
    if path.stat().st_size != w.size:
        raise _Fail(f"{path} is {path.stat().st_size:,} bytes, the record says {w.size:,}; publish it again with "
                    f"`zoo publish`")  # fmt: skip


def _weights_match(w: Weights, registry: Registry) -> None:
    """The file's card and tensors are the record's: architecture, classes, input, normalisation, and the tensor
    shapes of the architecture (compared on the meta device) with the recorded parameter count."""
    from zoo import checkpoint, weights

    path = weights.fetch(w, progress=False)
    saved = checkpoint.load(path)
    card = saved.card
    recorded = {"architecture": w.architecture, "classes": w.classes, "input_shape": w.input_shape, "mean": w.mean,
                "std": w.std}  # fmt: skip
    differ = [k for k, v in recorded.items() if getattr(card, k) != v]
    if differ:
        raise _Fail(f"{path}'s card and the record of {w.name} differ in {', '.join(differ)}; publish it again "
                    f"with `zoo publish`")  # fmt: skip
    model = checkpoint.build(saved, path)  # compares the tensors' shapes with the architecture's first
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if params != w.params:
        raise _Fail(f"{w.name}'s model has {params:,} trainable parameters, the record says {w.params:,}")
    if w.dataset in registry.datasets:
        ds = registry.datasets[w.dataset]
        if (ds.classes, ds.shape) != (w.classes, w.input_shape):
            raise _Fail(f"the record of {w.name} gives classes or input shape other than data set {ds.name}'s; "
                        f"publish it again with `zoo publish`")  # fmt: skip


def _weights_accuracy(w: Weights, data_dir: str | Path | None) -> None:
    """``zoo eval ARCH:TAG`` gives the recorded test accuracy, to the image, where the data set is at hand."""
    from zoo.evaluation import evaluate

    with tempfile.TemporaryDirectory() as out:
        try:
            result = evaluate(w.name, data_dir=data_dir, out=out, download=False)
        except DatasetNotFound as exc:
            raise _Skip(f"data set {w.dataset} not here ({_oneline(exc)})") from None
    total = len(result.evaluation.labels)
    if abs(result.evaluation.accuracy - w.accuracy) > 0.5 / total:
        raise _Fail(f"{w.name} scores {result.evaluation.accuracy:.4%} on {w.dataset}'s test split, the record says "
                    f"{w.accuracy:.4%}; publish the weights again with `zoo publish`")  # fmt: skip


def _command_help(command: Any) -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(command, ["--help"])
    if result.exit_code != 0:
        why = " ".join(str(result.exception or result.output).split())[:300]
        raise _Fail(f"`zoo {command.name} --help` exits {result.exit_code}: {why}")


def _weights_cases(w: Weights, registry: Registry, data_dir: str | Path | None) -> list[Case]:
    case = partial(Case, f"weights {w.name}")
    present = case("file present, with the recorded sha256 and size", "publish it with `zoo publish`",
                   partial(_weights_file, w))  # fmt: skip
    matches = case("file matches the record and the architecture", "publish it with `zoo publish`",
                   partial(_weights_match, w, registry), needs=[present])  # fmt: skip
    accurate = case("reproduces the recorded accuracy", "publish it with `zoo publish`",
                    partial(_weights_accuracy, w, data_dir), needs=[matches])  # fmt: skip
    return [present, matches, accurate]


def _dataset_cases(ds: Dataset, data_dir: str | Path | None) -> list[Case]:
    from zoo.data import resolve_data_dir

    loaded = []  # the test split's images, for the checks after it

    def load() -> None:
        try:
            loaded.append(ds.load("test", resolve_data_dir(data_dir), download=False)[0])
        except DatasetNotFound as exc:  # only the files' absence is not the plugin's fault
            raise _Skip(f"files not here ({_oneline(exc)})") from None

    case = partial(Case, f"data set {ds.name}")
    imports = _references(ds)
    loads = case(
        "test split loads", "fix the loader: it returns uint8 images N×C×H×W and int64 labels", load, needs=[imports]
    )
    return [
        imports,
        case(
            "normalisation",
            "give one mean in [0, 1] and one std > 0 per channel",
            lambda: all(0 <= m <= 1 for m in ds.mean) and all(s > 0 for s in ds.std),
        ),
        case(
            "split sizes", "train_size and test_size must be positive", lambda: ds.train_size > 0 and ds.test_size > 0
        ),
        loads,
        case(
            "test split size matches test_size",
            "correct test_size or the loader",
            lambda: len(loaded[0]) == ds.test_size,
            needs=[loads],
        ),
    ]


def _tolerances(registry: Registry, tolerances: Mapping[str, float] | None) -> dict[str, float]:
    """``tolerances`` by each format's own name, checked."""
    checked = {}
    for name, ulps in (tolerances or {}).items():
        if not (isinstance(ulps, (int, float)) and ulps >= 0):
            raise SettingError("tolerances", f"must map format names to float32 rounding steps >= 0, got {ulps!r}")
        checked[registry.exporter(name).name] = float(ulps)
    return checked


def cases(
    name: str, data_dir: str | Path | None = None, *, tolerances: Mapping[str, float] | None = None
) -> list[Case]:
    """The checks on a plugin (distribution or entry-point name: all it provides) or one architecture, data set,
    export format or runtime.

    Nothing heavy runs until a case is run, so a test module can parametrize over them at collection.
    ``tolerances`` allows a float32 format more rounding steps than the default (``{"onnx": 256}``).
    """
    registry = get_registry()
    allowed = _tolerances(registry, tolerances)
    plugins = [p for p in registry.plugins if name.lower() in (p.distribution.lower(), p.name.lower())]
    if not plugins:
        try:
            item = registry.lookup(name)
        except UnknownName as error:
            installed = ", ".join(sorted({p.distribution for p in registry.plugins}))
            raise UnknownName(f"{error}; installed plugins: {installed} (see `zoo plugins`)") from None
        if isinstance(item, Architecture):
            return _architecture_cases(item, registry, allowed)
        if isinstance(item, Exporter):
            return _exporter_cases(item, registry, allowed)
        if isinstance(item, Runtime):
            return _runtime_cases(item, registry)
        return _dataset_cases(item, data_dir)
    found = []
    for plugin in plugins:
        case = partial(Case, f"plugin {plugin.name} ({plugin.label})")
        found.append(
            case(
                "loads",
                f"{plugin.error or plugin.status}; fix the module or its entry point",
                _always(plugin.status == "loaded"),
            )
        )
        found.append(
            case("everything it registers is accepted", "; ".join(plugin.conflicts), _always(not plugin.conflicts))
        )
        for provided in plugin.provides:
            kind, _, provided_name = provided.rpartition(" ")
            if kind == "architecture":
                found += _architecture_cases(registry.architectures[provided_name], registry, allowed)
            elif kind == "data set":
                found += _dataset_cases(registry.datasets[provided_name], data_dir)
            elif kind == "export format":
                found += _exporter_cases(registry.exporters[provided_name], registry, allowed)
            elif kind == "runtime":
                found += _runtime_cases(registry.runtimes[provided_name], registry)
            elif kind == "weights":
                found += _weights_cases(registry.weights[provided_name], registry, data_dir)
            elif kind == "command":
                found.append(Case(f"command zoo {provided_name}", "--help runs", "fix the command",
                                  partial(_command_help, registry.commands[provided_name])))  # fmt: skip
    return found


def check(
    name: str, data_dir: str | Path | None = None, *, tolerances: Mapping[str, float] | None = None
) -> list[Finding]:
    """Run every check of ``cases``."""
    return [c.run() for c in cases(name, data_dir, tolerances=tolerances)]


def check_architecture(
    arch: Architecture, registry: Registry | None = None, tolerances: Mapping[str, float] | None = None
) -> list[Finding]:
    """Metadata, recipes, a model for every data set, output shapes, gradients, a training step that learns,
    every export."""
    registry = registry or get_registry()
    return [c.run() for c in _architecture_cases(arch, registry, _tolerances(registry, tolerances))]


def check_dataset(ds: Dataset, data_dir: str | Path | None = None) -> list[Finding]:
    """Metadata, and, where the files are at hand (or generated), the test split's shape, type and size."""
    return [c.run() for c in _dataset_cases(ds, data_dir)]


def report(findings: list[Finding], strict: bool = False) -> str:
    """One line per check, failures with their fix and skips with their reason, then the totals."""
    marks = {"passed": "ok  ", "failed": "FAIL", "skipped": "FAIL" if strict else "skip"}
    lines = []
    for f in findings:
        lines.append(f"{marks[f.status]}  {f.subject}: {f.check}" + (f" — {f.detail}" if f.status != "passed" else ""))
    counts = {status: sum(f.status == status for f in findings) for status in marks}
    lines.append(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
    return "\n".join(lines)


def assert_conforms(
    name: str,
    data_dir: str | Path | None = None,
    *,
    strict: bool = False,
    tolerances: Mapping[str, float] | None = None,
) -> None:
    """Raise AssertionError with the report unless every check on ``name`` passes (or, unless ``strict``,
    is skipped); for plugin test suites."""
    findings = check(name, data_dir, tolerances=tolerances)
    if any(f.status == "failed" or (strict and f.status == "skipped") for f in findings):
        raise AssertionError("\n" + report(findings, strict))
