"""The model card: what a checkpoint or an exported file says about its model, as one typed, validated record.

A file's metadata is untrusted input: it decides what zoo builds, allocates, reads and prints.
``ModelCard.from_json`` checks every field's type and bounds before any of that happens, and
turns anything wrong into one ``zoo.errors.ZooError`` naming the file and the field.
``encode`` and ``decode`` store a card as the string-to-string metadata that safetensors and
ONNX files carry.  Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError
from zoo.loader import get_registry
from zoo.version import __version__

if TYPE_CHECKING:
    from zoo.registry import Architecture, Dataset

__all__ = [
    "MAX_CLASSES",
    "MAX_INPUT_VALUES",
    "MAX_META_BYTES",
    "ModelCard",
    "Provider",
    "decode",
    "encode",
    "new_card",
    "parse_json_value",
]

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
_TEXT = re.compile(r"[\w.+\-]{1,100}")  # a distribution name or version
_JSON_KEYS = "__json_keys__"  # metadata values listed here are JSON; the rest are plain strings


class _Invalid(ValueError):
    """One field is wrong; ModelCard.parse turns it into a ZooError naming the file."""


def parse_json_value(source: object, key: str, text: str) -> Any:
    """A metadata value stored as JSON text, refused before parsing when it is longer than MAX_META_BYTES."""
    if len(text) > MAX_META_BYTES:
        raise ZooError(
            f"{source} has invalid zoo metadata: {_show(key)} is {len(text):,} bytes long "
            f"(at most {MAX_META_BYTES:,}); use a file written by zoo"
        )
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ZooError(
            f"{source} has invalid zoo metadata: {_show(key)} is not valid JSON; use a file written by zoo"
        ) from None


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


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not (value == "" or _TEXT.fullmatch(value)):
        raise _Invalid(f"{key} must be a name or version of up to 100 characters, got {_show(value)}")
    return value


def _object(key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Invalid(f"{key} must be a JSON object, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    """A value for an error message, never longer than a line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Provider:
    """The installed distribution whose plugin registered the architecture (``zoo-classifiers 0.1.0``)."""

    distribution: str
    version: str

    def __str__(self) -> str:
        return f"{self.distribution} {self.version}"


@dataclass(frozen=True)
class ModelCard:
    """The model's identity, its input contract, and where it came from: what every file of it carries."""

    architecture: str
    """The registered architecture that builds the model."""
    classes: tuple[str, ...]
    """The class names, in the order of the model's outputs."""
    input_shape: tuple[int, int, int]
    """Channels, height, width of one input image."""
    mean: tuple[float, ...]
    """Per-channel normalisation mean of pixels scaled to [0, 1]."""
    std: tuple[float, ...]
    """Per-channel normalisation of pixels scaled to [0, 1]: ``(x - mean) / std``."""
    dataset: str | None = None
    """The data set trained on: a registered name, or the path of a folder of images (used only when named again)."""
    provider: Provider | None = None
    """The distribution that registered the architecture, and its version."""
    trained: bool = True
    """False for fresh weights (``zoo export --untrained``)."""
    config: dict[str, Any] = field(default_factory=dict, compare=False)
    """The ``zoo train`` settings (zoo.training.TrainConfig as JSON); empty for untrained weights."""
    epoch: int | None = None
    """Epochs trained when the file was written."""
    metrics: dict[str, Any] = field(default_factory=dict, compare=False)
    """That epoch's record: losses, accuracies, learning rate, speed."""
    zoo_version: str = ""
    """The zoo version that wrote the file."""
    torch_version: str = ""
    """The PyTorch version that wrote the file."""
    opset: int | None = None
    """The ONNX opset, in exported files."""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def dataset_is_folder(self) -> bool:
        """The data set recorded is a folder's path, which zoo reads only when the user names it again."""
        return self.dataset is not None and not _REGISTERED.fullmatch(self.dataset)

    def to_json(self) -> dict[str, Any]:
        """The card as a dict of JSON values; ``from_json(card.to_json())`` gives the card back."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(
            classes=list(self.classes),
            input_shape=list(self.input_shape),
            mean=list(self.mean),
            std=list(self.std),
            provider=self.provider and vars(self.provider),
        )
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: object) -> ModelCard:
        """Validate a file's metadata; anything missing, mistyped or out of bounds is a ZooError naming ``source``.

        Keys the card does not know are ignored: a newer zoo may record more.
        """
        try:
            return cls._from_json(data)
        except _Invalid as exc:
            raise ZooError(f"{source} has invalid zoo metadata: {exc}; use a file written by zoo") from None

    @classmethod
    def _from_json(cls, meta: Mapping[str, Any]) -> ModelCard:
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
                raise _Invalid(
                    f"each class name must be printable text of 1 to {MAX_CLASS_NAME} characters, got {_show(name)}"
                )
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
        provider = meta.get("provider")
        if provider is not None:
            if not isinstance(provider, dict) or set(provider) != {"distribution", "version"}:
                raise _Invalid(f"provider must be {{distribution, version}}, got {_show(provider)}")
            provider = Provider(
                _text("provider distribution", provider["distribution"]), _text("provider version", provider["version"])
            )
        trained = meta.get("trained", True)
        if not isinstance(trained, bool):
            raise _Invalid(f"trained must be true or false, got {_show(trained)}")
        epoch, opset = meta.get("epoch"), meta.get("opset")
        return cls(
            architecture=architecture,
            classes=tuple(classes),
            input_shape=(c, h, w),
            mean=_floats("mean", meta["mean"], c, positive=False),
            std=_floats("std", meta["std"], c, positive=True),
            dataset=dataset,
            provider=provider,
            trained=trained,
            config=_object("config", meta.get("config")),
            epoch=None if epoch is None else _int("epoch", epoch, 0, 1 << 30),
            metrics=_object("metrics", meta.get("metrics")),
            zoo_version=_text("zoo_version", meta.get("zoo_version", "")),
            torch_version=_text("torch_version", meta.get("torch_version", "")),
            opset=None if opset is None else _int("opset", opset, 1, 1000),
        )


def new_card(arch: Architecture, dataset: Dataset | None = None, **values: Any) -> ModelCard:
    """The card of a model of ``arch`` built for ``dataset`` (without one: the architecture's own shape, untrained)."""
    import torch

    if dataset is None:
        c = arch.input_shape[0]
        values = {
            "classes": tuple(map(str, range(arch.num_classes))),
            "input_shape": arch.input_shape,
            "mean": (0.0,) * c,
            "std": (1.0,) * c,
            "trained": False,
            **values,
        }
    else:
        values = {
            "classes": dataset.classes,
            "input_shape": dataset.shape,
            "mean": dataset.mean,
            "std": dataset.std,
            "dataset": dataset.ref,
            **values,
        }
    registry = get_registry()
    plugin = registry.provider(arch) if registry.architectures.get(arch.name) is arch else None
    provider = Provider(plugin.distribution, plugin.version) if plugin else None
    return ModelCard(
        architecture=arch.name,
        provider=provider,
        zoo_version=__version__,
        torch_version=torch.__version__,
        **values,
    )


def encode(values: Mapping[str, Any]) -> dict[str, str]:
    """JSON values as the string-to-string metadata of a safetensors or ONNX file: strings as they are, the rest
    as JSON text, with the keys of the latter listed under ``__json_keys__``."""
    text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
    text[_JSON_KEYS] = json.dumps(sorted(k for k, v in values.items() if not isinstance(v, str)))
    return text


def decode(text: Mapping[str, str], source: object) -> dict[str, Any]:
    """The values ``encode`` stored; every JSON text is bounded in length before it is parsed.
    Metadata without ``__json_keys__`` is not zoo's: an empty dict."""
    if _JSON_KEYS not in text:
        return {}
    json_keys = parse_json_value(source, _JSON_KEYS, text[_JSON_KEYS])
    if not isinstance(json_keys, list):
        raise ZooError(f"{source} has invalid zoo metadata: {_JSON_KEYS} is not a list; use a file written by zoo")
    return {k: parse_json_value(source, k, v) if k in json_keys else v for k, v in text.items() if k != _JSON_KEYS}
