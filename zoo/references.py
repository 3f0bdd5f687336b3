"""What a user names as a model (a run, a checkpoint, an exported file, ``ARCH:TAG``, an architecture) resolved once
into a ``ModelRef``, which every command and API function then passes down."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from zoo import runs, weights
from zoo.errors import DataWarning, UnknownName, ZooError
from zoo.files import read_json, sha256
from zoo.loader import get_registry
from zoo.registry import Exporter, Weights

__all__ = ["ModelRef", "exporter_for", "resolve"]


@dataclass(frozen=True)
class ModelRef:
    """One model, as a command was given it: the file to load and everything known about it before loading."""

    given: str
    """What was named, as typed."""
    kind: Literal["run", "file", "weights"]
    """A run directory, a file (checkpoint or export), or published weights."""
    path: Path
    """The file to load: a run's best (else last) checkpoint, the file itself, or the published weights' verified
    file."""
    exporter: Exporter | None
    """The format of an exported file; None for zoo's own .safetensors, which loads through zoo.checkpoint."""
    run: Path | None = None
    """The run directory the file belongs to, if any."""
    weights: Weights | None = None
    """The published weights named."""
    sha256: str = ""
    """The file's sha256 where it was checked (against published weights' record or an export's manifest)."""
    note: str = ""
    """How the model was chosen, when the name left a choice (an architecture's newest run or default weights)."""

    @property
    def runs_code(self) -> bool:
        """Loading the file runs code it carries (TorchScript, .pt2): only with trust."""
        return self.exporter is not None and self.exporter.runs_code

    @property
    def data_dir(self) -> Path | None:
        """The data directory the run was trained with, a hint for reading data that is there."""
        return runs.recorded_data_dir(self.run) if self.run else None

    def __str__(self) -> str:
        return self.given


def exporter_for(path: Path) -> Exporter:
    """The export format a file is in, by its name's suffix (the longest that matches)."""
    formats = get_registry().exporters.values()
    matches = [e for e in formats if path.name.endswith(e.suffix)]
    if not matches:
        known = ", ".join(e.suffix for e in formats)
        raise ZooError(f"{path}: not a file zoo reads; give a run directory or a {known} file")
    return max(matches, key=lambda e: len(e.suffix))


def _check_manifest(path: Path) -> str:
    """The file's sha256 when the ``manifest.json`` beside it lists it (refused if it differs), else ""; says so
    when a manifest is there but cannot be checked against."""
    manifest = path.parent / "manifest.json"
    if not manifest.exists():
        return ""
    try:
        files = read_json(manifest)["files"]
        recorded = [e["sha256"] for e in files.values() if e.get("path") == path.name]
    except (ZooError, KeyError, TypeError, AttributeError) as exc:
        why = exc if isinstance(exc, ZooError) else f"{manifest} is not one zoo wrote"
        warnings.warn(f"{path} was not checked against its manifest: {why}", DataWarning, stacklevel=4)
        return ""
    if not recorded:
        return ""  # the manifest does not list this file: it was not exported here
    actual = sha256(path)
    if len(set(recorded)) != 1 or actual != recorded[0]:
        raise ZooError(
            f"{path} is not the file {manifest} lists: its sha256 is {actual}, the manifest says "
            f"{' or '.join(map(str, recorded))}; it was changed after export, so zoo will not load it (export it again)"
        )
    return actual


def _file(given: str, path: Path) -> ModelRef:
    run = path.parent if (path.parent / runs.CONFIG).exists() else None
    exporter = None if path.suffix == ".safetensors" else exporter_for(path)
    return ModelRef(given, "file", path, exporter, run=run, sha256=_check_manifest(path))


def _weights(given: str, w: Weights, note: str = "") -> ModelRef:
    path = weights.fetch(w)
    return ModelRef(given, "weights", path, None, weights=w, sha256=w.sha256, note=note)


def _resolve(given: str, runs_dir: Path) -> ModelRef:
    path = Path(given).expanduser()
    if path.is_dir():
        return ModelRef(given, "run", runs.find_weights(path), None, run=path)
    if path.exists():
        return _file(given, path)
    named = weights.split_name(given)
    if named:
        return _weights(given, get_registry().find_weights(*named))
    if path.suffix or len(path.parts) > 1:  # a path, not a name
        raise ZooError(f"{given} does not exist; give an architecture, ARCH:TAG, a run directory or a model file")
    registry = get_registry()
    try:
        arch = registry.architecture(given)
    except UnknownName as exc:
        raise ZooError(f"{exc}; or give a run directory, a model file or published weights ARCH:TAG") from None
    newest = runs.newest(runs_dir, arch.name)
    if newest is not None:
        note = f"{given} is the newest run of {arch.name} in {runs_dir}/: {newest} ({runs.describe(newest)})"
        return ModelRef(given, "run", runs.find_weights(newest), None, run=newest, note=note)
    if not registry.weights_of(arch.name):
        raise ZooError(
            f"no trained run of {arch.name} in {runs_dir}/; train one with `zoo train {arch.name} DATASET`, give a run "
            f"directory or a model file, or export fresh weights on purpose: zoo export {arch.name} --untrained"
        )
    w = registry.find_weights(arch.name)
    note = (
        f"no run of {arch.name} in {runs_dir}/, so these are its published weights {w.name} "
        f"({w.accuracy:.2%} on {w.dataset}'s test split)"
    )
    return _weights(given, w, note)


def resolve(given: str | Path | ModelRef, runs_dir: str | Path = runs.DEFAULT_RUNS_DIR) -> ModelRef:
    """The model ``given`` names, resolved once: a path that exists (a run directory: its best checkpoint), else
    published weights ``ARCH:TAG`` (their file fetched and its sha256 checked), else an architecture: its newest
    run in ``runs_dir``, else its default published weights.  An exported file listed in the ``manifest.json``
    beside it must have the sha256 recorded there.  A ModelRef is returned as it is."""
    if isinstance(given, ModelRef):
        return given
    return _resolve(str(given), Path(runs_dir))
