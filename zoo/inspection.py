"""What a model file says about itself, read as data without running it: its card, format, precision and proof."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.card import ModelCard
from zoo.errors import ZooError
from zoo.files import read_json
from zoo.references import resolve

__all__ = ["FileReport", "inspect_file"]


@dataclass(frozen=True)
class FileReport:
    """One model file: what it is, and what ``zoo export`` proved of it."""

    path: Path
    format: str
    """The export format's name; ``checkpoint`` for a file ``zoo train`` wrote."""
    card: ModelCard
    bytes: int
    sha256: str
    """Checked against the manifest beside the file where one lists it; "" where none does."""
    export: dict[str, Any] = field(default_factory=dict)
    """The file's own record (format, precision, scores, proof policy); {} for a checkpoint or an older file."""
    verification: list[dict[str, Any]] = field(default_factory=list)
    """The proof's measured result, from the manifest that lists the file with the sha256 it has now."""

    @property
    def precision(self) -> str:
        return str(self.export.get("precision", "float32"))


def inspect_file(path: str | Path) -> FileReport:
    """Read ``path``'s metadata without running anything in it (a TorchScript or .pt2 file is read as a zip archive),
    validate it as a model card, and find the proof's result in the ``manifest.json`` beside it."""
    ref = resolve(Path(path))
    if ref.kind != "file":
        raise ZooError(f"{path} is not a model file; give an exported file or a .safetensors checkpoint")
    if ref.exporter is None:
        from zoo import checkpoint

        meta, name = checkpoint.metadata(ref.path), "safetensors"
    else:
        meta, name = ref.exporter.read_metadata(ref.path), ref.exporter.name
    if not meta:
        raise ZooError(f"{ref.path} carries no zoo metadata; export it with `zoo export`")
    card = ModelCard.from_json(meta, ref.path)
    export = meta.get("export")
    export = export if isinstance(export, dict) else {}
    if not export and name == "safetensors":
        name = "checkpoint"
    checks: list[dict[str, Any]] = []
    if ref.sha256:  # the manifest lists this very file: its proof's result is there
        rows = read_json(ref.path.parent / "manifest.json").get("verification", [])
        checks = [c for c in rows if isinstance(c, dict) and c.get("format") == name]
    return FileReport(ref.path, name, card, ref.path.stat().st_size, ref.sha256, export, checks)
