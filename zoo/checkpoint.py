"""Model files in zoo's own format: a model card and weights (and, to resume, optimizer state) in one safetensors
file, and the way back from card and weights to a model.  No pickle anywhere."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.card import ModelCard, decode, encode
from zoo.errors import ZooError
from zoo.files import atomic_path
from zoo.loader import get_registry
from zoo.registry import Plugin, format_shape

__all__ = ["Checkpoint", "build", "load", "load_weights", "metadata", "read", "save", "write"]

_OPTIMIZER = "__optimizer__"  # prefix of optimizer tensors; model state-dict keys never contain "/"
_AVERAGE = "__average__"  # prefix of the weights' moving average (--ema), in a run's last checkpoint
_RESUME = "__resume__"  # the training history and progress, in a run's last checkpoint
_EXPORT = "export"  # zoo export's record of the file, as in every exported format


@dataclass
class Checkpoint:
    weights: dict[str, torch.Tensor]
    card: ModelCard
    resume: dict[str, Any] | None = field(default=None, repr=False)
    """``{"history": [...], "progress": {...}}``, in a run's ``last`` checkpoint only."""
    optimizer: dict[str, Any] | None = field(default=None, repr=False)
    """An ``optimizer.state_dict()``, in the ``last`` checkpoint only."""
    export: dict[str, Any] | None = None
    """What ``zoo export`` recorded of the file (format, precision, scores, proof), in exported files only."""
    average: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    """The moving average of the weights (``--ema``: an ``AveragedModel``'s state dict), in the ``last`` checkpoint."""


def save(
    path: Path,
    weights: dict[str, torch.Tensor],
    card: ModelCard,
    *,
    resume: dict[str, Any] | None = None,
    optimizer: dict[str, Any] | None = None,
    export: dict[str, Any] | None = None,
    average: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write a checkpoint atomically: a kill at any moment leaves the previous file intact."""
    tensors = dict(weights)
    tensors.update({f"{_AVERAGE}/{k}": v for k, v in (average or {}).items()})
    values = card.to_json()
    if export is not None:
        values[_EXPORT] = export
    if resume is not None:
        values[_RESUME] = resume
    if optimizer is not None:
        scalars = {}
        for index, state in optimizer["state"].items():
            for name, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{_OPTIMIZER}/{index}/{name}"] = value
                else:
                    scalars[f"{index}/{name}"] = value
        values[_OPTIMIZER] = {"param_groups": optimizer["param_groups"], "scalars": scalars}
    write(path, tensors, values)


def write(path: Path, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
    """Write tensors and JSON ``values`` as a safetensors file, atomically, checking nothing: ``save`` is the
    way to write a model; this is for tools and tests that make files by hand."""
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=encode(values))
    with atomic_path(path) as tmp:
        tmp.write_bytes(_canonical(data))


def _canonical(data: bytes) -> bytes:
    """A safetensors file with its JSON header's keys sorted: the library writes its metadata in hash-map order,
    which changes from one process to the next, and the same weights must give the same bytes. The tensors' data
    (offsets are counted from its start) is kept as it is; the header stays padded to 8 bytes, as the format asks."""
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + size :]


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and metadata values of a safetensors file, unchecked; not a readable file is a ZooError."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            text = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ZooError(f"{path} is not a readable safetensors checkpoint ({exc}); give a file written by zoo") from exc
    return tensors, decode(text, path)


def load(path: Path) -> Checkpoint:
    """Read a checkpoint written by ``save``; its card is validated, and a file that is not one is a clear error."""
    tensors, values = read(path)
    if not values:
        raise ZooError(f"{path} has no zoo metadata; give a checkpoint written by `zoo train`")
    card = ModelCard.from_json(values, path)
    weights = {k: v for k, v in tensors.items() if not k.startswith((_OPTIMIZER + "/", _AVERAGE + "/"))}
    average = {k.removeprefix(_AVERAGE + "/"): v for k, v in tensors.items() if k.startswith(_AVERAGE + "/")}
    optimizer = None
    if _OPTIMIZER in values:
        try:
            optimizer = _optimizer_state(tensors, values[_OPTIMIZER])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ZooError(
                f"the optimizer state in {path} is damaged ({type(exc).__name__}: {exc}); "
                f"start the run again with `zoo train`"
            ) from None
    export = values.get(_EXPORT)
    return Checkpoint(weights, card, values.get(_RESUME), optimizer, export if isinstance(export, dict) else None,
                      average or None)  # fmt: skip


def metadata(path: Path) -> dict[str, Any]:
    """The metadata values of a safetensors file, read from its header alone (no tensor is loaded)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return decode(f.metadata() or {}, path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ZooError(f"{path} is not a readable safetensors file ({exc}); give a file written by zoo") from exc


def _optimizer_state(tensors: dict[str, torch.Tensor], saved: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *saved["scalars"].items()]:
        if key.startswith(_OPTIMIZER + "/"):
            key = key[len(_OPTIMIZER) + 1 :]
        elif isinstance(value, torch.Tensor):
            continue
        index, name = key.split("/")
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": saved["param_groups"]}


def build(saved: Checkpoint, source: Path) -> nn.Module:
    """The model a checkpoint describes, with its weights, in eval mode.

    The file's tensor shapes are compared with the architecture's on PyTorch's meta device (which allocates
    nothing) before the model is built for real.
    """
    card = saved.card
    registry = get_registry()
    if card.architecture not in registry.architectures and card.provider is not None:
        _missing_provider(card, registry.plugins, source)
    arch = registry.architecture(card.architecture)
    with torch.device("meta"):
        skeleton = arch.build(card.input_shape, card.num_classes)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in saved.weights.items()}
    if expected != found:
        wrong = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
        detail = (
            f"tensor {wrong[0]} is {found[wrong[0]]} in the file, {expected[wrong[0]]} in the model"
            if wrong
            else f"tensors differ: {', '.join(sorted(expected.keys() ^ found.keys())[:3])}"
        )
        raise ZooError(
            f"the weights in {source} do not fit {arch.name} for {format_shape(card.input_shape)} images in "
            f"{card.num_classes} classes ({detail}); give the file its own metadata, as `zoo train` writes it"
        )
    model = arch.build(card.input_shape, card.num_classes)
    load_weights(model, saved.weights, source)
    return model.eval()


def _missing_provider(card: ModelCard, plugins: list[Plugin], source: Path) -> None:
    """Say why the plugin that provided the file's architecture gives it no more, and how to get it back."""
    assert card.provider is not None
    wanted = card.provider.distribution.lower()
    status = next((p.status for p in plugins if p.distribution.lower() == wanted), None)
    fix = {
        None: f"which is not installed: pip install {card.provider.distribution}",
        "failed": "which failed to load (`zoo plugins` says why)",
        "disabled": "which is turned off ($ZOO_PLUGINS or $ZOO_DISABLE_PLUGIN_AUTOLOAD)",
    }.get(status)
    if fix:
        raise ZooError(f"{source} holds {card.architecture}, provided by {card.provider}, {fix}")


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    """Copy ``weights`` into ``model``; tensors that do not fit are a ZooError naming ``source``."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ZooError(f"the weights in {source} do not fit this model ({detail})") from exc
