"""The conformance kit: checks that a plugin's architectures, data sets and formats work with zoo.

Use it from a plugin's own tests::

    from zoo.testing import assert_conforms

    def test_my_plugin():
        assert_conforms("zoo-mynets")      # a distribution, entry point, architecture or data set name

or from the command line: ``zoo check zoo-mynets``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from zoo.errors import ZooError
from zoo.loader import get_registry
from zoo.registry import Architecture, Dataset, Registry, format_shape

__all__ = ["Finding", "assert_conforms", "check", "check_architecture", "check_dataset", "report"]


@dataclass(frozen=True)
class Finding:
    subject: str
    check: str
    ok: bool
    detail: str = ""
    """What went wrong and how to fix it; empty when the check passed."""


def _guard(subject: str, name: str, fix: str, test: Callable[[], object]) -> Finding:
    """Run ``test()``; a False result or an exception fails the check with ``fix`` as the advice."""
    try:
        result = test()
    except Exception as exc:
        return Finding(subject, name, False, f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}; {fix}")
    if result is False:
        return Finding(subject, name, False, fix)
    return Finding(subject, name, True)


def check_architecture(arch: Architecture, registry: Registry | None = None) -> list[Finding]:
    """Metadata, recipes, a model for every data set, output shapes, a training step that learns, every export."""
    import torch

    from zoo.exporting import export
    from zoo.training import resolve_config

    registry = registry or get_registry()
    subject = f"architecture {arch.name}"
    findings = [
        _guard(subject, "metadata", "give a summary, a C×H×W input_shape and num_classes >= 2",
               lambda: bool(arch.summary) and len(arch.input_shape) == 3 and min(arch.input_shape) > 0
               and arch.num_classes >= 2),
    ]  # fmt: skip
    for label, recipe in (("default", arch.default_recipe), ("tutorial", arch.tutorial_recipe)):
        if recipe is not None:
            findings.append(_guard(
                subject, f"{label} recipe", "fix the Recipe's values (see the error)",
                partial(resolve_config, arch, _any_dataset(registry, arch), label),
            ))  # fmt: skip

    def forward(shape: tuple[int, int, int], classes: int) -> bool:
        model = arch.build(shape, classes).eval()
        with torch.no_grad():
            out = model(torch.rand(2, *shape))
        if tuple(out.shape) != (2, classes):
            raise ValueError(f"output shape {tuple(out.shape)}, expected (2, {classes})")
        return True

    targets = [(f"builds for {ds.name}", ds.shape, ds.num_classes) for ds in registry.datasets.values()]
    targets.append(("honours num_classes", arch.input_shape, 3))
    for label, shape, classes in targets:
        findings.append(_guard(subject, f"{label} ({format_shape(shape)}, {classes} classes)",
                               "the builder must honour input_shape and num_classes",
                               partial(forward, shape, classes)))  # fmt: skip

    def learns() -> bool:
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

    findings.append(_guard(subject, "ten training steps on a fixed batch lower the loss",
                           "check that forward uses every layer and returns scores, not argmax", learns))  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        for fmt in registry.exporters:
            findings.append(_guard(
                subject, f"exports to {fmt} with parity",
                "avoid data-dependent control flow and in-place changes to the input in forward",
                partial(export, arch.name, [fmt], untrained=True, out=Path(out) / fmt),
            ))  # fmt: skip
    return findings


def _any_dataset(registry: Registry, arch: Architecture) -> Dataset:
    recipe_set = arch.default_recipe.dataset
    if recipe_set in registry.datasets:
        return registry.datasets[recipe_set]
    return next(iter(registry.datasets.values()))


def check_dataset(ds: Dataset, data_dir: str | Path | None = None) -> list[Finding]:
    """Metadata, and, where the files are at hand (or generated), the test split's shape, type and labels."""
    from zoo.data import resolve_data_dir

    subject = f"data set {ds.name}"
    findings = [
        _guard(subject, "normalisation", "give one mean in [0, 1] and one std > 0 per channel",
               lambda: all(0 <= m <= 1 for m in ds.mean) and all(s > 0 for s in ds.std)),
        _guard(subject, "split sizes", "train_size and test_size must be positive",
               lambda: ds.train_size > 0 and ds.test_size > 0),
    ]  # fmt: skip
    try:
        images, labels = ds.load("test", resolve_data_dir(data_dir), download=False)
    except ZooError as exc:
        findings.append(Finding(subject, "test split loads", True, f"skipped: files not here ({exc})"))
        return findings
    except Exception as exc:
        findings.append(Finding(subject, "test split loads", False, f"{type(exc).__name__}: {exc}; fix the loader"))
        return findings
    findings.append(_guard(subject, "labels are class indices", f"labels must lie in 0..{ds.num_classes - 1}",
                           lambda: int(labels.min()) >= 0 and int(labels.max()) < ds.num_classes))  # fmt: skip
    findings.append(_guard(subject, "test split size matches test_size", "correct test_size or the loader",
                           lambda: len(images) == ds.test_size))  # fmt: skip
    return findings


def check(name: str, data_dir: str | Path | None = None) -> list[Finding]:
    """Check a plugin (distribution or entry-point name: all it provides) or one architecture or data set."""
    registry = get_registry()
    plugins = [p for p in registry.plugins if name.lower() in (p.distribution.lower(), p.name.lower())]
    if plugins:
        findings = []
        for plugin in plugins:
            subject = f"plugin {plugin.name} ({plugin.label})"
            findings.append(Finding(subject, "loads", plugin.status == "loaded",
                                    f"{plugin.error or plugin.status}; fix the module or its entry point"))  # fmt: skip
            findings.append(Finding(subject, "names are its own", not plugin.conflicts, "; ".join(plugin.conflicts)))
            for provided in plugin.provides:
                kind, _, provided_name = provided.rpartition(" ")
                if kind == "architecture":
                    findings += check_architecture(registry.architectures[provided_name], registry)
                elif kind == "data set":
                    findings += check_dataset(registry.datasets[provided_name], data_dir)
        return findings
    item = registry.lookup(name)
    return check_architecture(item, registry) if isinstance(item, Architecture) else check_dataset(item, data_dir)


def report(findings: list[Finding]) -> str:
    """One line per check, failures with their fix, then the totals."""
    lines = []
    for f in findings:
        mark = "ok  " if f.ok else "FAIL"
        shown = f.detail and (not f.ok or f.detail.startswith("skipped"))
        lines.append(f"{mark}  {f.subject}: {f.check}" + (f" — {f.detail}" if shown else ""))
    failed = sum(not f.ok for f in findings)
    lines.append(f"{len(findings) - failed} passed, {failed} failed")
    return "\n".join(lines)


def assert_conforms(name: str, data_dir: str | Path | None = None) -> None:
    """Raise AssertionError with the report unless every check on ``name`` passes; for plugin test suites."""
    findings = check(name, data_dir)
    if not all(f.ok for f in findings):
        raise AssertionError("\n" + report(findings))
