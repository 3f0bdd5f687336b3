"""The plugin contract: every hook a zoo plugin can implement."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from zoo.registry import Architecture, Dataset, Exporter, Runtime, Weights

hookspec = pluggy.HookspecMarker("zoo")
hookimpl = pluggy.HookimplMarker("zoo")


@hookspec
def register_architectures(register: Callable[[Architecture], None]) -> None:
    """Register model architectures.

    Call ``register(zoo.Architecture(...))`` once per architecture.  Keep
    ``torch`` imports out of the module's top level and give ``builder`` as a
    ``"module:attribute"`` string, so that ``zoo list`` stays fast.
    """


@hookspec
def register_datasets(register: Callable[[Dataset], None]) -> None:
    """Register image data sets.

    Call ``register(zoo.Dataset(...))`` once per data set.  The data set's
    ``loader`` returns a split as ``(uint8 images N×C×H×W, int64 labels N)``.
    """


@hookspec
def register_exporters(register: Callable[[Exporter], None]) -> None:
    """Register export formats.

    Call ``register(zoo.Exporter(...))`` once per format.  ``zoo export`` writes
    each file with ``writer`` and proves it with ``runner``, which must load the
    written file with the format's own runtime.
    """


@hookspec
def register_runtimes(register: Callable[[Runtime], None]) -> None:
    """Register runtimes for export formats' files.

    Call ``register(zoo.Runtime(...))`` once per runtime.  ``zoo predict|eval|bench|serve --runtime NAME[:PRECISION]``
    runs a file with it, once zoo has proved it against the format's own runner: within float32 rounding for
    float32, by the format's approximate policy on the test split for bfloat16 or int8.
    """


@hookspec
def register_weights(register: Callable[[Weights], None]) -> None:
    """Register published trained weights.

    Call ``register(zoo.Weights(...))`` once per file; ``zoo.weights.packaged(__package__)`` reads
    the records that ``zoo publish`` wrote into the plugin's ``weights/`` folder.  Weights for an
    architecture that no plugin registers are dropped with a warning.
    """


@hookspec
def register_commands(register: Callable[[click.Command], None]) -> None:
    """Add ``zoo`` subcommands.

    Call ``register(command)`` with a ``click`` command (``@click.command()``) or group.  zoo's own
    commands keep their names; errors a command raises are reported as zoo's are.
    """
