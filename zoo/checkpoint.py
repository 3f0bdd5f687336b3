"""Checkpoints as safetensors files: weights, optional optimizer state, and metadata, with no pickle anywhere."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from zoo.card import parse_json_value
from zoo.errors import ZooError
from zoo.files import atomic_path

__all__ = ["Checkpoint", "load", "save"]

_OPTIMIZER = "__optimizer__"  # prefix of optimizer tensors; model state-dict keys never contain "/"
_JSON_KEYS = "__json_keys__"  # metadata values listed here are JSON; the rest are plain strings


@dataclass
class Checkpoint:
    weights: dict[str, torch.Tensor]
    meta: dict[str, Any]
    """architecture, dataset, classes, input_shape, mean, std, epoch, metrics, zoo_version, ..."""
    optimizer: dict[str, Any] | None = field(default=None, repr=False)
    """An ``optimizer.state_dict()``, in the ``last`` checkpoint only."""


def save(
    path: Path, weights: dict[str, torch.Tensor], meta: dict[str, Any], optimizer: dict[str, Any] | None = None
) -> None:
    """Write a checkpoint atomically: a kill at any moment leaves the previous file intact."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    meta = dict(meta)
    if optimizer is not None:
        scalars = {}
        for index, state in optimizer["state"].items():
            for name, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{_OPTIMIZER}/{index}/{name}"] = value.detach().cpu().contiguous()
                else:
                    scalars[f"{index}/{name}"] = value
        meta[_OPTIMIZER] = {"param_groups": optimizer["param_groups"], "scalars": scalars}
    text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    text[_JSON_KEYS] = json.dumps(sorted(k for k, v in meta.items() if not isinstance(v, str)))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=text)


def load(path: Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save`; a file that is not one is a clear error."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            text = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ZooError(f"{path} is not a readable safetensors checkpoint ({exc}); give a file written by zoo") from exc
    if _JSON_KEYS not in text:
        raise ZooError(f"{path} has no zoo metadata; give a checkpoint written by `zoo train`")
    json_keys = parse_json_value(path, _JSON_KEYS, text.pop(_JSON_KEYS))
    if not isinstance(json_keys, list):
        raise ZooError(f"{path} has invalid zoo metadata: {_JSON_KEYS} is not a list; use a file written by zoo")
    meta = {k: parse_json_value(path, k, v) if k in json_keys else v for k, v in text.items()}
    weights = {k: v for k, v in tensors.items() if not k.startswith(_OPTIMIZER + "/")}
    optimizer = None
    if _OPTIMIZER in meta:
        saved = meta.pop(_OPTIMIZER)
        state: dict[int, dict[str, Any]] = {}
        for key, value in [*tensors.items(), *saved["scalars"].items()]:
            if key.startswith(_OPTIMIZER + "/"):
                key = key[len(_OPTIMIZER) + 1 :]
            elif isinstance(value, torch.Tensor):
                continue
            index, name = key.split("/")
            state.setdefault(int(index), {})[name] = value
        optimizer = {"state": state, "param_groups": saved["param_groups"]}
    return Checkpoint(weights, meta, optimizer)
