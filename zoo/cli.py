"""The ``zoo`` command line: a thin layer over the library."""

from __future__ import annotations

import fnmatch
import json
import math
import os
import shlex
import signal
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from zoo.errors import DataWarning, PluginWarning, SettingError, ZooError
from zoo.files import writable_dir
from zoo.loader import get_registry
from zoo.registry import DEFAULT_ULPS, Architecture, Dataset, Exporter, Registry, Runtime, Weights, format_shape
from zoo.version import __version__

if TYPE_CHECKING:
    from zoo.references import ModelRef

__all__ = ["cli", "main"]

DEBUG_ENV = "ZOO_DEBUG"


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    click.echo(f"zoo: warning: {message}", err=True)


class ZooGroup(click.Group):
    """zoo's commands and those plugins register; errors become one line on stderr and a non-zero exit
    (``--debug`` shows the traceback), warnings one ``zoo: warning:`` line."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("always", PluginWarning)
            warnings.simplefilter("always", DataWarning)
            warnings.showwarning = _show_warning
            return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            command = f"zoo {exc.ctx.info_name} --help" if exc.ctx and exc.ctx.parent else "zoo --help"
            click.echo(f"zoo: error: {exc.format_message()} (see `{command}`)", err=True)
            ctx.exit(2)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, BrokenPipeError):
            raise
        except KeyboardInterrupt:  # Ctrl-C outside training's own handler (start-up, eval, export)
            click.echo("zoo: interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:
            if ctx.params.get("debug") or os.environ.get(DEBUG_ENV):
                raise
            text = " ".join((exc.option_message if isinstance(exc, SettingError) else str(exc)).split())
            if not isinstance(exc, ZooError):
                text = f"unexpected {type(exc).__name__}: {text} (rerun with --debug for the traceback)"
            click.echo(f"zoo: error: {text}", err=True)
            ctx.exit(1)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_plugin_commands(self.commands)})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        # zoo's own commands first: running one loads no plugin until it needs the registry.
        return super().get_command(ctx, name) or _plugin_commands(self.commands).get(name)


def _plugin_commands(own: Mapping[str, click.Command]) -> dict[str, click.Command]:
    """The subcommands plugins register; one named like a command of zoo's own is dropped, with a warning."""
    registry = get_registry()
    for name in [n for n in registry.commands if n in own]:
        registry.remove(registry.commands[name], "is ignored: zoo has a command of that name", "rename it")
    return registry.commands


def _load_torch() -> None:
    """Import torch with Ctrl-C held back until it has loaded, then honoured.

    A KeyboardInterrupt raised inside torch's import can surface in C++ code that cannot pass it on: the
    process then aborts, or the interrupt is lost and the command runs on.
    """

    received: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    except ValueError:  # not the main thread: signals cannot be caught here
        previous = None
    try:
        import torch  # noqa: F401
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Rows as left-aligned columns separated by two spaces."""
    cells = [[str(c) for c in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(map(len, column)) for column in zip(*cells, strict=True)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def _matches(item: Architecture | Dataset | Exporter | Runtime, patterns: Sequence[str]) -> bool:
    names = [item.name, *item.aliases]
    return not patterns or any(fnmatch.fnmatch(n, p.lower().replace("-", "_")) for n in names for p in patterns)


@click.group(cls=ZooGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help=f"Show full tracebacks for errors (or set ${DEBUG_ENV}).")
@click.version_option(__version__, "-V", "--version", prog_name="zoo")
def cli(debug: bool) -> None:
    """zoo: a pluggable model zoo for small image classifiers.

    Names can be shortened: `lenet` is lenet_bn, `cnn32` is mnist_cnn32.
    """


@cli.command("list")
@click.argument("patterns", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def list_(patterns: tuple[str, ...], as_json: bool) -> None:
    """List architectures, data sets, export formats and runtimes, optionally only those matching glob PATTERNS."""
    registry = get_registry()
    archs = [a for a in registry.architectures.values() if _matches(a, patterns)]
    sets = [d for d in registry.datasets.values() if _matches(d, patterns)]
    formats = [e for e in registry.exporters.values() if _matches(e, patterns)]
    runtimes = [r for r in registry.runtimes.values() if _matches(r, patterns)]
    if as_json:
        click.echo(json.dumps({"architectures": [_arch_json(registry, a) for a in archs],
                               "datasets": [_dataset_json(registry, d) for d in sets],
                               "formats": [_format_json(registry, e) for e in formats],
                               "runtimes": [_runtime_json(registry, r) for r in runtimes]}, indent=2))  # fmt: skip
        return
    sections = []
    if archs:
        sections.append("Architectures\n" + _table(
            ("name", "aliases", "input", "classes", "summary", "provider"),
            [(a.name, ", ".join(a.aliases), format_shape(a.input_shape), a.num_classes, a.summary,
              registry.provider(a).label) for a in archs],
        ))  # fmt: skip
    if sets:
        sections.append("Data sets\n" + _table(
            ("name", "aliases", "shape", "classes", "train / test", "summary", "provider"),
            [(d.name, ", ".join(d.aliases), format_shape(d.shape), d.num_classes, f"{d.train_size:,} / {d.test_size:,}",
              d.summary, registry.provider(d).label) for d in sets],
        ))  # fmt: skip
    if formats:
        sections.append("Export formats (zoo export ARCH --format NAME)\n" + _table(
            ("name", "aliases", "suffix", "summary", "provider"),
            [(e.name, ", ".join(e.aliases), e.suffix, e.summary, registry.provider(e).label) for e in formats],
        ))  # fmt: skip
    if runtimes:
        sections.append("Runtimes (zoo predict|eval|bench MODEL --runtime NAME[:PRECISION])\n" + _table(
            ("name", "aliases", "formats", "precisions", "summary", "provider"),
            [(r.name, ", ".join(r.aliases), ", ".join(r.formats), ", ".join(r.precisions), r.summary,
              registry.provider(r).label) for r in runtimes],
        ))  # fmt: skip
    if not sections:
        raise ZooError(f"nothing matches {' '.join(patterns)}; run `zoo list` without a pattern to see everything")
    click.echo("\n\n".join(sections))


def _provider_json(registry: Registry, item: Architecture | Dataset | Exporter | Runtime | Weights) -> dict[str, str]:
    plugin = registry.provider(item)
    return {"distribution": plugin.distribution, "version": plugin.version, "plugin": plugin.name}


def _arch_json(registry: Registry, a: Architecture) -> dict[str, Any]:
    return {"name": a.name, "aliases": list(a.aliases), "input_shape": list(a.input_shape),
            "num_classes": a.num_classes, "summary": a.summary, "source": a.source,
            "provider": _provider_json(registry, a)}  # fmt: skip


def _dataset_json(registry: Registry, d: Dataset) -> dict[str, Any]:
    return {"name": d.name, "aliases": list(d.aliases), "shape": list(d.shape), "classes": list(d.classes),
            "mean": list(d.mean), "std": list(d.std), "train_size": d.train_size, "test_size": d.test_size,
            "summary": d.summary, "source": d.source, "provider": _provider_json(registry, d)}  # fmt: skip


def _format_json(registry: Registry, e: Exporter) -> dict[str, Any]:
    return {"name": e.name, "aliases": list(e.aliases), "suffix": e.suffix, "summary": e.summary, "proof": e.proof,
            "runs_code": e.runs_code, "provider": _provider_json(registry, e)}  # fmt: skip


def _runtime_json(registry: Registry, r: Runtime) -> dict[str, Any]:
    return {"name": r.name, "aliases": list(r.aliases), "formats": list(r.formats), "precisions": list(r.precisions),
            "summary": r.summary, "source": r.source, "provider": _provider_json(registry, r)}  # fmt: skip


@cli.command()
@click.argument("name")
@click.option("--dataset", "dataset_name", metavar="DATASET", help="Show an architecture sized for this data set.")
@click.option(
    "--data-dir", type=click.Path(file_okay=False), help="Where data sets are stored (default: a per-user cache)."
)
def info(name: str, dataset_name: str | None, data_dir: str | None) -> None:
    """Describe an architecture (layers, parameters, recipes), a data set (classes, files), a folder of images,
    an export format, a runtime, or a model file (its card, precision and proof, read without running it)."""
    from zoo.folders import find_dataset

    if os.path.isfile(name):
        return _file_info(name)
    registry = get_registry()
    item = find_dataset(name) if os.path.isdir(name) else registry.lookup(name)
    if isinstance(item, Runtime):
        _runtime_info(registry, item)
    elif isinstance(item, Dataset):
        _dataset_info(registry, item, data_dir)
    elif isinstance(item, Exporter):
        _format_info(registry, item)
    else:
        _architecture_info(registry, item, find_dataset(dataset_name) if dataset_name else None)


def _runtime_info(registry: Registry, runtime: Runtime) -> None:
    click.echo(f"{runtime.name}: {runtime.summary}; provided by {registry.provider(runtime).label}")
    if runtime.aliases:
        click.echo(f"aliases: {', '.join(runtime.aliases)}")
    click.echo(f"runs: {', '.join(runtime.formats)} files")
    click.echo(f"computes in: {', '.join(runtime.precisions)} (the first by default; int8 files in int8)")
    if runtime.source:
        click.echo(f"source: {runtime.source}")
    click.echo(f"use: zoo predict MODEL IMAGE --runtime {runtime.name}[:PRECISION]; proved against the file's own "
               f"runtime first")  # fmt: skip


def _file_info(path: str) -> None:
    from zoo.inspection import inspect_file

    report = inspect_file(path)
    card, export = report.card, report.export
    checked = f"sha256 {report.sha256}, as its manifest lists" if report.sha256 else "listed in no manifest beside it"
    click.echo(f"{report.path}: {report.format} file, {report.bytes:,} bytes, {checked}")
    trained = f"trained on {card.dataset}" + (f" for {card.epoch} epochs" if card.epoch else "") if card.trained \
        else "untrained"  # fmt: skip
    provider = f", provided by {card.provider}" if card.provider else ""
    click.echo(f"model: {card.architecture}{provider}, {trained}")
    mean, std = (", ".join(f"{v:g}" for v in values) for values in (card.mean, card.std))
    click.echo(f"input: {format_shape(card.input_shape)}, normalised with mean {mean} and std {std}")
    click.echo(f"classes ({card.num_classes}): {', '.join(card.classes[:20])}{' ...' if card.num_classes > 20 else ''}")
    opset = card.opset if report.path.suffix == ".onnx" else None
    made = ", ".join(f"{k} {v}" for k, v in (("zoo", card.zoo_version), ("torch", card.torch_version),
                                             ("ONNX opset", opset)) if v)  # fmt: skip
    click.echo(f"written by {made or 'an unknown version'}")
    if not export:
        click.echo("proof: none recorded (a checkpoint `zoo train` wrote, or a file from an older zoo)")
        return
    click.echo(f"precision: {report.precision}; scores: {str(export.get('scores', 'logits')).replace('_', '-')}")
    proof = export.get("proof") or {}
    click.echo(f"proof: {', '.join(f'{k} {v}' for k, v in proof.items())}")
    for c in report.verification:  # an approximate file's distance in float32 rounding steps means nothing
        change = c.get("accuracy_change")
        said = (f"accuracy {change * 100:+.2f} points" if isinstance(change, float)
                else f"{c.get('ulps', 0):.3g} float32 rounding steps")  # fmt: skip
        verdict = "passed" if c.get("passed") else "FAILED"
        click.echo(f"  {c.get('inputs')} inputs, batch {c.get('batch_size')}: top-1 agreement "
                   f"{c.get('top1_agreement', 0):.2%}, {said}: {verdict}")  # fmt: skip


def _format_info(registry: Registry, exporter: Exporter) -> None:
    click.echo(f"{exporter.name}: {exporter.summary}; provided by {registry.provider(exporter).label}")
    if exporter.aliases:
        click.echo(f"aliases: {', '.join(exporter.aliases)}")
    click.echo(f"files: *{exporter.suffix}, written by `zoo export ARCH --format {exporter.name}`; "
               f"`zoo predict` and `zoo eval` run them by that suffix")  # fmt: skip
    click.echo(f"proof ({exporter.proof}): every file is run with the format's own runtime and must give "
               f"{exporter.describe_proof()}")  # fmt: skip
    if exporter.runs_code:
        click.echo("loading runs code the file carries: zoo loads such a file only with --trust")
    if exporter.notice:
        click.echo(f"notice: {exporter.notice}")


def _architecture_info(registry: Registry, arch: Architecture, dataset: Dataset | None) -> None:
    _load_torch()
    from zoo.summary import count_macs, summarize

    shape = dataset.shape if dataset else arch.input_shape
    classes = dataset.num_classes if dataset else arch.num_classes
    model = arch.build(shape, classes)
    layers, macs = summarize(model, shape), count_macs(model, shape)
    rows = [(l.name, l.kind, format_shape(l.output_shape), f"{l.params:,}",
             " + ".join(f"{t:,}" for t in l.tensors) if len(l.tensors) > 1 else "", f"{l.macs:,}" if l.macs else "")
            for l in layers]  # fmt: skip
    fitted = f" (sized for {dataset.name})" if dataset else ""
    click.echo(f"{arch.name}: {arch.summary}")
    click.echo(f"input {format_shape(shape)}, {classes} classes{fitted}; provided by {registry.provider(arch).label}")
    if arch.aliases:
        click.echo(f"aliases: {', '.join(arch.aliases)}")
    click.echo("")
    click.echo(_table(("layer", "type", "output", "params", "tensors", "MACs"), rows))
    click.echo("")
    click.echo(f"trainable parameters: {sum(l.params for l in layers):,}")
    outside = macs - sum(l.macs for l in layers)  # matrix products in forward itself, outside any layer
    click.echo(f"multiply-accumulates per image: {macs:,} (FLOPs: {2 * macs:,})"
               + (f", {outside:,} of them in products outside the layers" if outside else ""))  # fmt: skip
    click.echo(f"default recipe: {arch.default_recipe.describe()}")
    if arch.tutorial_recipe:
        click.echo(f"tutorial recipe: {arch.tutorial_recipe.describe()}")
        if arch.tutorial_recipe.notes:
            click.echo(f"  ({arch.tutorial_recipe.notes})")
    if arch.source:
        click.echo(f"source: {arch.source}")
    if arch.notes:
        click.echo(f"notes: {arch.notes}")
    published = registry.weights_of(arch.name)
    if published:
        legend = "; * is the default" if len(published) > 1 else ""  # one set of weights is the default, unmarked
        click.echo(f"\npublished weights (`zoo weights`{legend}):")
        click.echo(_table(("weights", "data set", "test accuracy", "parameters", "MACs", "size", "provider"),
                          [_weights_row(registry, w) for w in published]))  # fmt: skip


def _dataset_info(registry: Registry, dataset: Dataset, data_dir: str | None) -> None:
    from zoo.data import resolve_data_dir

    root = resolve_data_dir(data_dir)
    provider = f"folder {dataset.location}" if dataset.location else registry.provider(dataset).label
    click.echo(f"{dataset.name}: {dataset.summary}; provided by {provider}")
    if dataset.aliases:
        click.echo(f"aliases: {', '.join(dataset.aliases)}")
    click.echo(f"shape {format_shape(dataset.shape)}, {dataset.num_classes} classes: {', '.join(dataset.classes)}")
    click.echo(f"normalisation: mean {_floats(dataset.mean)}, std {_floats(dataset.std)}")
    click.echo(f"splits: {dataset.train_size:,} train / {dataset.test_size:,} test")
    if dataset.source:
        click.echo(f"source: {dataset.source}")
    if dataset.downloads:
        click.echo(f"data directory: {root}")
    click.echo(f"zoo: reading {dataset.name}'s files to check them (every image; seconds for large sets)", err=True)
    try:
        sizes = [len(dataset.load(split, root, download=False)[1]) for split in ("train", "test")]
    except ZooError as exc:
        click.echo(f"files: not ready. {exc}")
    else:
        click.echo(f"files: ready ({sizes[0]:,} train / {sizes[1]:,} test images)")


def _floats(values: Iterable[float]) -> str:
    return ", ".join(f"{v:.4f}" for v in values)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--strict", is_flag=True, help="Exit 1 if a plugin failed to load or had something turned down.")
def plugins(as_json: bool, strict: bool) -> None:
    """List plugin distributions: version, what each provides, and any load error or name conflict."""
    registry = get_registry()
    _plugin_commands(cli.commands)  # a command that collides with zoo's is a conflict to list
    if as_json:
        click.echo(json.dumps([vars(p) for p in registry.plugins], indent=2))
        _strict_exit(registry, strict)
        return
    rows = [(p.name, p.distribution, p.version, p.status, ", ".join(p.provides) or "-", p.location or p.module)
            for p in registry.plugins]  # fmt: skip
    click.echo(_table(("plugin", "distribution", "version", "status", "provides", "location"), rows))
    for p in registry.plugins:
        for problem in ([p.error] if p.error else []) + p.conflicts:
            click.echo(f"{p.name} ({p.distribution}): {problem}")
    if any(p.status == "disabled" for p in registry.plugins):
        click.echo("third-party plugins are off: $ZOO_DISABLE_PLUGIN_AUTOLOAD or $ZOO_PLUGINS is set")
    _strict_exit(registry, strict)


def _strict_exit(registry: Registry, strict: bool) -> None:
    broken = [p.name for p in registry.plugins if p.status == "failed" or p.conflicts]
    if strict and broken:
        raise ZooError(f"plugins with problems: {', '.join(broken)} (see above); fix or uninstall them")


@cli.command()
@click.argument("architecture", required=False)
@click.argument("dataset", required=False)
@click.option(
    "--recipe",
    type=click.Choice(["default", "tutorial"]),
    help="Start from the architecture's default settings (the default) or its tutorial's exact ones.",
)
@click.option("--epochs", type=int, help="Passes over the training split.")
@click.option("--batch-size", type=int, help="Images per step.")
@click.option("--lr", type=float, help="Peak learning rate.")
@click.option("--optimizer", help="adam, adamw or sgd (with Nesterov momentum 0.9).")
@click.option("--weight-decay", type=float, help="Weight decay (decoupled for adamw).")
@click.option("--schedule", help="Learning-rate schedule: constant, onecycle or cosine.")
@click.option("--warmup", type=float, help="Fraction of the steps the onecycle schedule warms up over.")
@click.option("--augment", help="none, crop (random crops after padding), flip (random mirroring), affine (random "
                                "rotation, shift, scale and shear), erase (a random rectangle), or crop_flip, "
                                "crop_erase, flip_erase, crop_flip_erase, affine_erase.")  # fmt: skip
@click.option("--label-smoothing", type=float, help="Share of each target spread over all classes (0.1, say).")
@click.option("--ema", type=float, metavar="DECAY",
              help="Keep, validate and test an exponential moving average of the weights (0.999, say).")  # fmt: skip
@click.option("--seed", type=int, help="Seed for the weights, the validation split, the shuffle and augmentation.")
@click.option("--val-split", type=float, help="Fraction of the training split held out for validation.")
@click.option("--image-size", type=int, help="Resize a folder's images to N x N pixels.")
@click.option("--grayscale/--color", default=None, help="Read a folder's images as grey or colour.")
@click.option("--limit", type=int, help="Train on this many training images only (smoke runs).")
@click.option("--max-steps", type=int, help="Stop after this many optimizer steps (smoke runs).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
@click.option("--threads", type=int, help="CPU threads [default: the CPUs this process may use].")
@click.option("--amp", is_flag=True, default=None, help="Mixed precision (bfloat16 autocast).")
@click.option(
    "--init",
    metavar="WEIGHTS",
    help="Fine-tune: start from ARCH:TAG, a run or a weights file (a new head for another class count).",
)
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where data sets are stored.")
@click.option("--runs-dir", type=click.Path(file_okay=False), help="Parent of new run directories [default: runs].")
@click.option("--out", type=click.Path(file_okay=False), help="The run directory itself (must be new or empty).")
@click.option("--resume", type=click.Path(file_okay=False), metavar="RUN", help="Continue an interrupted run.")
@click.option(
    "--nproc-per-node",
    type=click.IntRange(1, 1024),
    help="Train in N processes on this machine, through torchrun; --batch-size is their batch together.",
)
@click.option("--quiet", "-q", is_flag=True, help="One line per epoch instead of a progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON on stdout.")
@click.pass_context
def train(ctx: click.Context, /, architecture: str | None, dataset: str | None, quiet: bool, as_json: bool,
          resume: str | None, **options: Any) -> None:  # fmt: skip
    """Train ARCHITECTURE on DATASET (default: the data set of its recipe), or --resume a run.

    DATASET is a registered name or a folder of images: FOLDER/<class>/*.png, or FOLDER/train/<class>/
    and FOLDER/test/<class>/.

    Unset options come from the architecture's recipe; `zoo info ARCHITECTURE` shows it.
    Ctrl-C saves a checkpoint to resume from.
    """
    _load_torch()
    from zoo import distributed
    from zoo.training import Progress, RunComplete, TrainingInterrupted, keep_freed_memory
    from zoo.training import train as run_training

    nproc = options.pop("nproc_per_node")
    if resume and (architecture or any(v is not None for k, v in options.items() if k not in ("device", "data_dir"))):
        raise click.UsageError("--resume RUN continues a run with its own settings; give no architecture or options")
    if not resume and not architecture:
        raise click.UsageError("missing ARCHITECTURE (see `zoo list`), or --resume RUN")
    recipe_name = options.pop("recipe") or "default"
    if nproc is not None:
        _torchrun(ctx, nproc)
    keep_freed_memory()  # the process is zoo's own: tune glibc for training speed
    main_process = distributed.current().main
    progress: Progress = "none" if as_json and quiet else "lines" if quiet or not sys.stderr.isatty() else "bar"
    try:
        result = run_training(architecture, dataset, recipe=recipe_name, resume=resume, progress=progress, **options)
    except TrainingInterrupted as exc:
        if main_process:
            click.echo(f"zoo: {exc}", err=True)
        ctx.exit(130)
    except RunComplete as exc:
        if main_process:
            click.echo(f"zoo: {exc}", err=True)
        return
    if not main_process:  # rank 0 reports for all
        return
    if as_json:
        click.echo(json.dumps(result.summary(), indent=2))
        return
    click.echo(f"run: {result.path}")
    click.echo(_evaluation_text(result.test, result.classes))
    click.echo(f"plots: {result.path / 'curves.png'}, confusion.png, misses.png")
    run = shlex.quote(str(result.path))
    # A run trained on a folder is scored on it only when the folder is named again (files are data).
    folder = f" {shlex.quote(result.config.dataset)}" if os.path.isdir(result.config.dataset) else ""
    click.echo(f"next: zoo eval {run}{folder} | zoo predict {run} IMAGE.png | zoo export {run}")


def _torchrun(ctx: click.Context, nproc: int) -> None:
    """Run this same command in ``nproc`` processes through torchrun (torch.distributed.run) on this machine."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    from zoo import distributed

    if distributed.current().active:
        raise click.UsageError("--nproc-per-node starts the processes; under torchrun they are started already")
    from zoo.machine import available_cpus

    argv, args = [], iter(sys.argv[1:])
    for arg in args:
        if arg == "--nproc-per-node":
            next(args, None)
        elif not arg.startswith("--nproc-per-node="):
            argv.append(arg)
    # Each process gets its share of the CPUs (torchrun would otherwise say it chose 1 thread).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, available_cpus() // nproc)))
    try:
        torchrun(["--standalone", "--nproc-per-node", str(nproc), "-m", "zoo", *argv])
    except ChildFailedError:
        ctx.exit(1)  # each process has said what went wrong
    except SignalException:  # torchrun passed the signal on: the processes saved a checkpoint to resume from
        ctx.exit(130)
    ctx.exit(0)


RUNTIME_HELP = (
    "Run the model in this registered runtime (`zoo list`), proved against the file's own first; "
    "PRECISION: float32 (default), bfloat16 or float16 where the runtime offers it."
)


def _evaluation_text(evaluation: Any, classes: Sequence[str]) -> str:
    from zoo.evaluation import report

    return "test " + report(evaluation, classes)


def _model(given: str) -> ModelRef:
    """What the command was given, resolved once; how it was chosen, when the name left a choice, on stderr."""
    from zoo.references import resolve

    ref = resolve(given)
    if ref.note:
        click.echo(f"note: {ref.note}", err=True)
    return ref


@cli.command("eval")
@click.argument("weights", metavar="RUN_OR_WEIGHTS")
@click.argument("dataset", required=False)
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where data sets are stored.")
@click.option("--out", type=click.Path(file_okay=False), help="Where to write report.txt and the plots.")
@click.option("--json", "as_json", is_flag=True, help="Print accuracy and per-class figures as JSON.")
@click.option("--trust", is_flag=True, help="Load TorchScript and .pt2 files, which run code they carry.")
@click.option("--runtime", metavar="NAME[:PRECISION]", help=RUNTIME_HELP)
def eval_(weights: str, dataset: str | None, data_dir: str | None, out: str | None, as_json: bool, trust: bool,
          runtime: str | None) -> None:  # fmt: skip
    """Score trained weights on DATASET's test split (default: the data set they were trained on).

    RUN_OR_WEIGHTS is a run directory, a .safetensors, .onnx, .pt or .pt2 file, published weights ARCH:TAG, or an
    architecture (its newest run in ./runs, else its default weights).
    """
    _load_torch()
    from zoo.evaluation import evaluate

    result = evaluate(_model(weights), dataset, data_dir=data_dir, out=out, trust=trust, runtime=runtime)
    if result.runtime:
        click.echo(f"runtime: {result.runtime}", err=True)
    if as_json:
        precision, recall = result.evaluation.precision_recall()
        click.echo(json.dumps({
            "weights": str(result.weights), "dataset": result.dataset, "accuracy": result.accuracy,
            "loss": result.evaluation.loss, "out": str(result.out), "runtime": result.runtime or None,
            "per_class": {c: {"precision": float(p), "recall": float(r)}
                          for c, p, r in zip(result.classes, precision, recall, strict=True)},
        }, indent=2))  # fmt: skip
        return
    click.echo(f"{result.weights} on {result.dataset}:")
    click.echo(result.report())
    click.echo(f"written: {result.out / 'report.txt'}, confusion.png, misses.png")


@cli.command()
@click.argument("weights", metavar="RUN_OR_WEIGHTS")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", "-k", type=int, default=3, show_default=True, help="How many classes to show per image.")
@click.option("--invert/--no-invert", default=None,
              help="Invert grey levels, or never [default: when the image's background is the opposite of the "
                   "training data's, such as dark ink on white paper for MNIST models].")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the predictions as JSON.")
@click.option("--trust", is_flag=True, help="Load TorchScript and .pt2 files, which run code they carry.")
@click.option("--runtime", metavar="NAME[:PRECISION]", help=RUNTIME_HELP)
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Where data sets are stored: a bfloat16 or int8 --runtime is proved on the test split.")  # fmt: skip
@click.pass_context
def predict(ctx: click.Context, weights: str, images: tuple[str, ...], top_k: int, invert: bool | None, as_json: bool,
            trust: bool, runtime: str | None, data_dir: str | None) -> None:  # fmt: skip
    """Classify image files (PNG, JPEG; any size or colour mode) with trained weights.

    RUN_OR_WEIGHTS is a run directory, an exported file, published weights ARCH:TAG (`zoo weights`), or an
    architecture (its newest run in ./runs, else its default weights).
    """
    from zoo.prediction import classify
    from zoo.runtimes import load_runner  # imports only the file's own runtime (and the one asked for)

    run, card = load_runner(_model(weights), trust, runtime=runtime, data_dir=data_dir)
    if runtime:
        click.echo(f"runtime: {run}", err=True)
    results = classify(run, card, images, top_k, invert)
    for r in results:
        if r.error:
            click.echo(f"zoo: error: {r.error}", err=True)
        elif not as_json:
            note = " (inverted: its background is the opposite of the training images')" if r.inverted else ""
            click.echo(f"{r.image}: " + ", ".join(f"{name} {p:.1%}" for name, p in r.top) + note)
    if as_json:
        click.echo(json.dumps([{"image": str(r.image), "top": r.top, "inverted": r.inverted, "error": r.error or None}
                               for r in results]))  # fmt: skip
    if any(r.error for r in results):
        ctx.exit(1)


@cli.command()
@click.argument("target", metavar="ARCH_OR_RUN")
@click.option("--safetensors", is_flag=True, help="Weights and metadata (bit-identical).")
@click.option("--torchscript", is_flag=True, help="Traced TorchScript (deprecated by PyTorch).")
@click.option("--onnx", is_flag=True, help="ONNX, checked with onnxruntime.")
@click.option("--pt2", is_flag=True, help="torch.export program.")
@click.option("--format", "extra", multiple=True, metavar="NAME", help="Another registered format (repeatable).")
@click.option(
    "--all",
    "all_formats",
    is_flag=True,
    help="Every registered format, int8 and fp16 included, but those that train (onnx_int8_qat: name it) "
    "[default: all but the approximate ones].",
)
@click.option("--weights", help="A checkpoint file, run directory or published ARCH:TAG to export.")
@click.option("--untrained", is_flag=True, help="Export freshly initialised weights, on purpose.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Directory for the files [default: RUN/export, or beside a weights file].")  # fmt: skip
@click.option("--runs-dir", type=click.Path(file_okay=False), default="runs", show_default=True,
              help="Where to look for the newest run of ARCH.")  # fmt: skip
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset.")
@click.option("--ulps", type=click.FloatRange(min=0), default=DEFAULT_ULPS, show_default=True,
              help="Largest difference allowed, in float32 rounding steps at each output row's scale.")  # fmt: skip
@click.option("--batch-sizes", default="1,2,64", show_default=True, help="Batch sizes the parity check runs.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where data sets are stored (for real inputs).")
@click.option("--dataset", metavar="DATASET_OR_FOLDER",
              help="Whose test images feed the parity check [default: the data set trained on].")  # fmt: skip
@click.option("--min-agreement", "agreements", metavar="FORMAT=FRACTION", multiple=True,
              help="An approximate format's top-1 agreement needed on the test split, such as onnx_int8=0.99 "
                   "[default: the format's own, 0.995 for int8 and fp16]; repeatable.")  # fmt: skip
@click.option("--max-accuracy-drop", "drops", metavar="FORMAT=POINTS", multiple=True,
              help="Points of test accuracy an approximate format may lose, such as onnx_int8=0.5 "
                   "[default: the format's own, 0.3 for int8 and fp16]; repeatable.")  # fmt: skip
@click.option("--force", is_flag=True, help="Overwrite existing exported files.")
@click.option("--json", "as_json", is_flag=True, help="Print the verification table as JSON.")
def export(target: str, safetensors: bool, torchscript: bool, onnx: bool, pt2: bool, extra: tuple[str, ...],
           all_formats: bool, batch_sizes: str, agreements: tuple[str, ...], drops: tuple[str, ...], as_json: bool,
           **options: Any) -> None:  # fmt: skip
    """Export a trained model to every format (or those named), each proven equivalent to the PyTorch model.

    ARCH_OR_RUN is a run directory, a weights file, published weights ARCH:TAG, or an architecture name: its
    newest run in --runs-dir, else its default published weights.
    """
    from dataclasses import asdict

    _load_torch()
    from zoo.exporting import ExportError
    from zoo.exporting import export as run_export

    flags = {"safetensors": safetensors, "torchscript": torchscript, "onnx": onnx, "pt2": pt2}
    chosen = [name for name, on in flags.items() if on] + list(extra)
    formats = [n for n, e in get_registry().exporters.items() if not e.trains] if all_formats else chosen or None
    try:
        result = run_export(
            target,
            formats,
            batch_sizes=_integers(batch_sizes, "--batch-sizes"),
            min_agreement=_per_format(agreements, "--min-agreement", 1),
            max_accuracy_drop=_per_format(drops, "--max-accuracy-drop", 100),
            **options,
        )
    except ExportError as exc:
        if exc.result is not None:  # show what was measured before the one-line error
            click.echo(exc.result.table())
        raise
    if as_json:
        click.echo(json.dumps({"out": str(result.out), "files": {k: str(v) for k, v in result.files.items()},
                               "checks": [asdict(c) for c in result.checks]}, indent=2))  # fmt: skip
        return
    click.echo(result.table())
    for name, path in result.files.items():
        click.echo(f"{name}: {path}")
    click.echo(f"manifest: {result.out / 'manifest.json'}")
    for notice in result.notices:
        click.echo(f"note: {notice}", err=True)


def _per_format(items: tuple[str, ...], option: str, scale: float) -> dict[str, float]:
    """FORMAT=NUMBER options as {format: number / scale}: agreement a fraction in (0, 1], a drop in points in
    [0, 100)."""
    values: dict[str, float] = {}
    for item in items:
        fmt, _, number = item.partition("=")
        try:
            value = float(number)
        except ValueError:
            value = math.nan
        agreement = scale == 1
        if not fmt or not (0 < value <= 1 if agreement else 0 <= value < 100):
            wanted = "a fraction above 0 and at most 1" if agreement else "points from 0 to below 100"
            raise click.BadParameter(f"takes FORMAT=NUMBER with {wanted}, such as onnx_int8="
                                     f"{0.99 if agreement else 0.5}; got {item!r}", param_hint=option)  # fmt: skip
        if values.get(fmt, value) != value:
            raise click.BadParameter(f"gives {fmt} two values", param_hint=option)
        values[fmt] = value / scale
    return values


def _integers(value: str, option: str) -> list[int]:
    try:
        return [int(b) for b in value.split(",")]
    except ValueError:
        raise click.BadParameter(  # noqa: B904 (the parse error itself says no more)
            f"{value!r} is not a comma-separated list of integers", param_hint=option
        )


@cli.command()
@click.argument("target", metavar="ARCH_OR_RUN_OR_FILE")
@click.option("--formats", metavar="NAMES",
              help="Comma-separated runtimes: eager, eager_cl (channels-last), eager_bf16 (bfloat16 autocast) and "
                   "export formats [default: all of them].")  # fmt: skip
@click.option("--batch-sizes", default="1,256", show_default=True, help="Batch sizes to time.")
@click.option("--rounds", type=click.IntRange(min=1, max=100), default=5, show_default=True,
              help="Times every runtime is timed, in turn.")  # fmt: skip
@click.option("--seconds", type=click.FloatRange(min=0, max=60, min_open=True), default=0.25, show_default=True,
              help="Seconds per runtime, batch size and round.")  # fmt: skip
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Where data sets are stored: int8 and fp16 files are proved on the test split.")  # fmt: skip
@click.option("--trust", is_flag=True, help="Load a TorchScript or .pt2 FILE, which runs code it carries.")
@click.option("--runtime", "runtimes", multiple=True, metavar="NAME[:PRECISION]",
              help="Also time each file a registered runtime runs, in it, proved first (repeatable).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Also draw images/s per runtime into this PNG file.")
def bench(target: str, formats: str | None, batch_sizes: str, as_json: bool, plot: str | None, **options: Any) -> None:
    """Time a model in every runtime zoo runs it in, side by side, and name the fastest.

    ARCH_OR_RUN_OR_FILE: an architecture (its newest run in ./runs, else its published weights), ARCH:TAG, a run
    directory or weights file (exported into a temporary folder in every format, each proved first), or one
    exported file, timed in its own format.
    Rounds alternate between the runtimes, so that the machine's drift hits all alike.  Beside the figures: the
    CPU's features, the same-run matrix-multiply peak and copy bandwidth, and each runtime's share of its roofline.
    """
    import pathlib

    picture = pathlib.Path(plot) if plot else None
    if picture and (picture.suffix.lower() != ".png" or not picture.parent.is_dir()):
        problem = "is not a .png file" if picture.parent.is_dir() else f"is in {picture.parent}, which is no folder"
        raise click.BadParameter(f"{plot} {problem}; name a PNG file in an existing folder", param_hint="--plot")
    if picture:  # checked now, not after minutes of timing
        writable_dir(picture.parent, "name a --plot file in a folder you can write to")
    _load_torch()
    from zoo.benchmarking import bench as run_bench

    names = [f.strip() for f in formats.split(",")] if formats else None
    result = run_bench(target, names, batch_sizes=_integers(batch_sizes, "--batch-sizes"), **options)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo(result.table())
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    if picture:  # after the figures are out: a plot that cannot be written loses nothing measured
        result.plot(Path(picture))


def _weights_row(registry: Registry, w: Weights) -> tuple[str, ...]:
    marked = len(registry.weights_of(w.architecture)) > 1 and registry.find_weights(w.architecture) is w
    return (w.name + " *" * marked, w.dataset, f"{w.accuracy:.2%}", f"{w.params:,}", f"{w.macs:,}",
            f"{w.size / 1e6:.2f} MB", registry.provider(w).label)  # fmt: skip


@cli.command("weights")
@click.argument("patterns", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@click.option("--markdown", is_flag=True, help="Print the table in Markdown (the README's results table).")
def weights_(patterns: tuple[str, ...], as_json: bool, markdown: bool) -> None:
    """List published weights (ARCH:TAG), optionally those matching glob PATTERNS; * marks the default of an
    architecture that has several.

    Use them by name: zoo eval cnn32:mnist, zoo predict lenet:fashionmnist IMAGE, zoo export cnn32:mnist.
    """
    registry = get_registry()
    aliases = {a.name: a.aliases for a in registry.architectures.values()}
    globs = [p.lower() if ":" in p else f"{p.lower()}:*" for p in patterns]  # `cnn32` matches cnn32:anything
    chosen = [
        w
        for w in registry.weights.values()
        if not globs
        or any(fnmatch.fnmatch(f"{n}:{w.tag}", g) for n in (w.architecture, *aliases[w.architecture]) for g in globs)
    ]
    if as_json:
        click.echo(json.dumps([{**w.to_json(), "name": w.name, "provider": _provider_json(registry, w)}
                               for w in chosen], indent=2))  # fmt: skip
        return
    if not chosen:
        raise ZooError(f"no published weights match {' '.join(patterns)}; run `zoo weights` to see them all"
                       if patterns else "no plugin publishes weights; train your own with `zoo train`")  # fmt: skip
    headers = ("weights", "data set", "test accuracy", "parameters", "MACs", "size", "provider")
    rows = [_weights_row(registry, w) for w in chosen]
    if markdown:
        lines = [headers, tuple("---" for _ in headers), *[(f"`{r[0]}`", *r[1:]) for r in rows]]
        click.echo("\n".join("| " + " | ".join(row) + " |" for row in lines))
        return
    click.echo(_table(headers, rows))


@cli.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--tag", help="The TAG of ARCH:TAG [default: the data set's name].")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="Where to write ARCH-TAG.safetensors and its record ARCH-TAG.json (a plugin's weights/ folder).",
)
@click.option("--url", default="", help="Where the file will be downloadable from, if not shipped as package data.")
@click.option("--default", "default", is_flag=True, help="Make these the architecture's default weights.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where the test split is stored.")
@click.option("--force", is_flag=True, help="Replace weights published in --out under the same name.")
def publish(run: str, tag: str | None, out: str, url: str, default: bool, data_dir: str | None, force: bool) -> None:
    """Make a finished run into published weights: the file, and a record with its test accuracy, sha256,
    size, parameters, MACs and the `zoo train` command that made it."""
    _load_torch()
    from zoo.publishing import publish as run_publish

    record = run_publish(run, tag, out, url=url, default=default, data_dir=data_dir, force=force)
    name = f"{record['architecture']}-{record['tag']}"
    click.echo(f"wrote {os.path.join(out, name)}.safetensors and .json: {record['architecture']}:{record['tag']}, "
               f"{record['accuracy']:.2%} on {record['dataset']}'s test split, {record['size']:,} bytes")  # fmt: skip


@cli.command()
@click.argument("name")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where data sets are stored.")
@click.option("--strict", is_flag=True, help="Fail on skipped checks too (a data set whose files are not here).")
@click.option(
    "--ulps",
    "tolerances",
    metavar="FORMAT=N",
    multiple=True,
    help=f"Float32 rounding steps a format's outputs may differ by [default: {DEFAULT_ULPS:g}]; repeatable.",
)
@click.pass_context
def check(ctx: click.Context, name: str, data_dir: str | None, strict: bool, tolerances: tuple[str, ...]) -> None:
    """Run the conformance kit on a plugin (distribution or entry-point name), an architecture, a data set or an
    export format."""
    allowed = {}
    for item in tolerances:
        fmt, _, steps = item.partition("=")
        if not fmt or not steps.replace(".", "", 1).isdigit():  # a plain number >= 0
            raise ZooError(f"--ulps takes FORMAT=N with N >= 0, such as --ulps onnx=256; got {item!r}")
        allowed[fmt] = float(steps)
    _load_torch()
    from zoo.testing import check as run_checks
    from zoo.testing import report

    findings = run_checks(name, data_dir, tolerances=allowed)
    click.echo(report(findings, strict))
    if any(f.status == "failed" or (strict and f.status == "skipped") for f in findings):
        ctx.exit(1)


@cli.command()
@click.argument("models", nargs=-1, metavar="[MODEL]...")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback reaches other machines.")  # fmt: skip
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--runs-dir", type=click.Path(file_okay=False), default="runs", show_default=True,
              help="Where architecture names find their newest run, and where runs are served from.")  # fmt: skip
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Processes serving the one port.")  # fmt: skip
@click.option("--max-batch-size", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Images gathered into one onnxruntime call at most (1: no batching).")  # fmt: skip
@click.option("--max-delay-ms", type=click.FloatRange(0, 1000), default=0.0, show_default=True,
              help="How long a request waits for others to join its batch (0: those queued meanwhile).")  # fmt: skip
@click.option("--trust", is_flag=True, help="Allow a TorchScript or .pt2 MODEL: its code runs (it is then refused "
                                            "anyway: zoo serve runs ONNX; serve its run or .onnx export).")  # fmt: skip
@click.option("--cors", "origins", multiple=True, metavar="ORIGIN",
              help="Let pages from ORIGIN call the API from a browser (repeatable); none by default.")  # fmt: skip
@click.option("--runtime", metavar="NAME[:PRECISION]",
              help="Run the ONNX files in this registered runtime (openvino), proved against onnxruntime "
                   "first.")  # fmt: skip
def serve(models: tuple[str, ...], host: str, port: int, runs_dir: str, workers: int, max_batch_size: int,
          max_delay_ms: float, trust: bool, origins: tuple[str, ...], runtime: str | None) -> None:  # fmt: skip
    """Serve models over HTTP: a page to look at and try each one, and the Open Inference Protocol (KServe v2,
    Triton's HTTP API) for programs, at /v2.

    MODEL: anything zoo names (a run, an exported .onnx file, ARCH:TAG, an architecture); with none, every
    published weight and every finished run in --runs-dir. Models are fixed at start-up; weights are exported to
    ONNX once (proved, in the cache) and everything is run by onnxruntime, or by --runtime.
    """
    try:
        import uvicorn

        import zoo.serving as serving
    except ImportError as exc:
        raise ZooError(f"zoo serve needs {exc.name}: pip install 'zoo-classifiers[serve]'") from None
    settings = serving.ServeSettings(max_batch_size, max_delay_ms)
    served = serving.load_models(models, runs_dir, trust, runtime)  # weights exported once, before any worker
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"zoo: warning: listening on {host}, reachable from other machines; the API has no "
                   f"authentication: put it behind a proxy that has", err=True)  # fmt: skip
    for model in served.values():
        click.echo(f"{model.name}: {model.origin}" + (f"; runtime {model.details['runtime']}" if runtime else ""),
                   err=True)  # fmt: skip
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"zoo serve: http://{shown}:{port}/ (Ctrl-C stops it)", err=True)
    # uvicorn drains the requests in flight on SIGTERM, then raises the signal again with the handler it found:
    # this one, so that a stop asked for ends with status 0 (as Ctrl-C, which is SIGINT, does not).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    if workers == 1:
        uvicorn.run(serving.app(served, settings, origins), host=host, port=port, log_level="warning")
        return
    os.environ[serving.CONFIG_ENV] = json.dumps({"models": [m.given for m in served.values()],
                                                 "runs_dir": runs_dir, "trust": trust, "cors": origins,
                                                 "runtime": runtime,
                                                 "settings": vars(settings)})  # fmt: skip
    uvicorn.run("zoo.serving:app_from_environment", factory=True, host=host, port=port, workers=workers,
                log_level="warning")  # fmt: skip


@cli.command("new-plugin")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="Where to write it [default: ./zoo-NAME].")
def new_plugin(name: str, directory: str | None) -> None:
    """Write a working plugin package zoo-NAME: an architecture, a data set, a README and a conformance test."""
    from zoo.scaffold import new_plugin as scaffold

    root = scaffold(name, directory)
    click.echo(f"wrote {root}; next: pip install -e '{root}[test]' && zoo check zoo-{name} && pytest {root}")


def main() -> None:
    """Entry point of the ``zoo`` console script (``import zoo`` has set OMP_WAIT_POLICY: see zoo/__init__.py)."""
    try:
        cli(prog_name="zoo")
    except KeyboardInterrupt:  # before a command runs (ZooGroup handles it inside one)
        click.echo("zoo: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:  # `zoo ... | head` closed the pipe: not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    main()
