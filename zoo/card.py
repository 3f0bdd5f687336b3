"""The model card: what a checkpoint or an exported file says about its model, as one typed, validated record.

A file's metadata is untrusted input: it decides what zoo builds, allocates, reads and prints.
:meth:`ModelCard.parse` checks every field's type and bounds before any of that happens, and
turns anything wrong into one :class:`~zoo.errors.ZooError` naming the file and the field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zoo.errors import ZooError

__all__ = ["MAX_CLASSES", "MAX_INPUT_VALUES", "MAX_META_BYTES", "ModelCard", "parse_json_value"]

MAX_META_BYTES = 1 << 20
"""The longest metadata value read, in bytes of JSON (a training history of a thousand epochs is ~300 KB)."""
MAX_CLASSES = 100_000
MAX_CLASS_NAME = 200
MAX_CHANNELS = 64
MAX_SIDE = 4096
MAX_INPUT_VALUES = 1 << 22
"""Channels x height x width of one input image: 4 M values, 16 MB as float32 (2048x2048 RGB is 12.6 M: too big)."""
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
_REGISTERED = re.compile(r"[a-z][a-z0-9_]{0,99}")  # the grammar of registered names (zoo.registry)


class _Invalid(ValueError):
    """One field is wrong; ModelCard.parse turns it into a ZooError naming the file."""


def parse_json_value(source: object, key: str, text: str) -> Any:
    """A metadata value stored as JSON text, refused before parsing when it is longer than MAX_META_BYTES."""
    if len(text) > MAX_META_BYTES:
        raise ZooError(f"{source} has invalid zoo metadata: {_show(key)} is {len(text):,} bytes long "
                       f"(at most {MAX_META_BYTES:,}); use a file written by zoo")  # fmt: skip
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ZooError(f"{source} has invalid zoo metadata: {_show(key)} is not valid JSON; "
                       f"use a file written by zoo") from None  # fmt: skip


def _int(key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Invalid(f"{key} must be an integer from {low} to {high:,}, got {_show(value)}")
    return value


def _floats(key: str, value: Any, count: int, positive: bool) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != count:
        raise _Invalid(f"{key} must list one number per channel ({count}), got {_show(value)}")
    numbers = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or abs(v) > 1e6:
            raise _Invalid(f"{key} must hold finite numbers, got {_show(v)}")
        if positive and v <= 0:
            raise _Invalid(f"{key} must be positive, got {v}")
        numbers.append(float(v))
    return tuple(numbers)


def _show(value: Any) -> str:
    """A value for an error message, never longer than a line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class ModelCard:
    """The model's identity and the input contract that every exported copy of it keeps."""

    architecture: str
    classes: tuple[str, ...]
    input_shape: tuple[int, int, int]
    """Channels, height, width of one input image."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    """Per-channel normalisation of pixels scaled to [0, 1]: ``(x - mean) / std``."""
    dataset: str | None = None
    """The data set trained on: a registered name, or the path of a folder of images (used only when named again)."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    """Everything else the file records: versions, training settings, metrics, resume state."""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def dataset_is_folder(self) -> bool:
        """The data set recorded is a folder's path, which zoo reads only when the user names it again."""
        return self.dataset is not None and not _REGISTERED.fullmatch(self.dataset)

    @classmethod
    def parse(cls, meta: Mapping[str, Any], source: object) -> ModelCard:
        """Validate a file's metadata; anything missing, mistyped or out of bounds is a ZooError naming ``source``."""
        try:
            return cls._parse(meta)
        except _Invalid as exc:
            raise ZooError(f"{source} has invalid zoo metadata: {exc}; use a file written by zoo") from None

    @classmethod
    def _parse(cls, meta: Mapping[str, Any]) -> ModelCard:
        missing = [k for k in ("architecture", "classes", "input_shape", "mean", "std") if k not in meta]
        if missing:
            raise _Invalid(f"no {', '.join(missing)}")
        architecture = meta["architecture"]
        if not isinstance(architecture, str) or not _NAME.fullmatch(architecture):
            raise _Invalid(f"architecture must be a registered name, got {_show(architecture)}")
        dataset = meta.get("dataset")
        if dataset is not None and (not isinstance(dataset, str) or not 0 < len(dataset) <= 4096):
            raise _Invalid(f"dataset must be a name or a path, got {_show(dataset)}")
        classes = meta["classes"]
        if not isinstance(classes, list) or not 2 <= len(classes) <= MAX_CLASSES:
            raise _Invalid(f"classes must list 2 to {MAX_CLASSES:,} names, got {_show(classes)}")
        for name in classes:
            if not isinstance(name, str) or not 0 < len(name) <= MAX_CLASS_NAME or not name.isprintable():
                raise _Invalid(f"each class name must be printable text of 1 to {MAX_CLASS_NAME} characters, "
                               f"got {_show(name)}")  # fmt: skip
        if len(set(classes)) != len(classes):
            raise _Invalid("class names must be distinct")
        shape = meta["input_shape"]
        if not isinstance(shape, list) or len(shape) != 3:
            raise _Invalid(f"input_shape must be [channels, height, width], got {_show(shape)}")
        c = _int("input_shape channels", shape[0], 1, MAX_CHANNELS)
        h = _int("input_shape height", shape[1], 1, MAX_SIDE)
        w = _int("input_shape width", shape[2], 1, MAX_SIDE)
        if c * h * w > MAX_INPUT_VALUES:
            raise _Invalid(f"input_shape {c}x{h}x{w} is larger than zoo handles ({MAX_INPUT_VALUES:,} values)")
        known = {"architecture", "dataset", "classes", "input_shape", "mean", "std"}
        return cls(
            architecture=architecture,
            classes=tuple(classes),
            input_shape=(c, h, w),
            mean=_floats("mean", meta["mean"], c, positive=False),
            std=_floats("std", meta["std"], c, positive=True),
            dataset=dataset,
            extra={k: v for k, v in meta.items() if k not in known},
        )

    def to_meta(self) -> dict[str, Any]:
        """The card as the JSON-ready dict stored in files; ``parse(card.to_meta())`` gives the card back."""
        return {
            **self.extra,
            "architecture": self.architecture,
            "dataset": self.dataset,
            "classes": list(self.classes),
            "input_shape": list(self.input_shape),
            "mean": list(self.mean),
            "std": list(self.std),
        }
