"""What an ONNX file may ask of onnxruntime: no file reads, no loops, and tensors of a size known before it runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zoo.errors import ZooError

__all__ = ["MAX_BYTES_PER_IMAGE", "check_onnx"]

MAX_BYTES_PER_IMAGE = 1 << 30
"""The most memory the values of a graph (weights and every intermediate tensor, for one image) may add up to."""

# Operators whose running time or memory the file's data decides: a loop's trip count, a branch's graph.
_CONTROL_FLOW = {"Loop", "If", "Scan", "SequenceMap"}
_STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml"}


def _messages(message: Any) -> Iterator[Any]:
    """``message`` and every message inside it, to any depth: graphs in attributes and functions included."""
    yield message
    for field, value in message.ListFields():
        if field.message_type is not None:
            for item in [value] if hasattr(value, "ListFields") else value:  # one message, or a repeated field
                yield from _messages(item)


def _elements(dims: Any) -> int:
    count = 1
    for d in dims:
        count *= max(int(d), 0)
    return count


def check_onnx(proto: Any, path: Path) -> None:
    """Refuse ``proto`` (a loaded ``onnx.ModelProto``) unless running it on one image is bounded and self-contained.

    External data anywhere (initializers, sparse tensors, constants in attributes, subgraphs, functions) would
    make onnxruntime read files the model names, relative to the current directory; control flow and shapes
    computed from data would let the file choose how long it runs and how much it allocates.
    """
    import onnx
    from onnx import TensorProto

    total = 0
    for message in _messages(proto):
        if isinstance(message, TensorProto):
            if message.data_location == TensorProto.EXTERNAL or len(message.external_data):
                raise ZooError(
                    f"{path} keeps tensor {message.name or '(unnamed)'} as external data in another file; zoo reads "
                    f"only self-contained ONNX files, as `zoo export` writes them"
                )
            total += _elements(message.dims) * _itemsize(message.data_type)
        elif isinstance(message, onnx.SparseTensorProto):
            total += _elements(message.dims) * _itemsize(message.values.data_type)  # made dense when loaded
        elif (
            isinstance(message, onnx.NodeProto)
            and message.op_type in _CONTROL_FLOW
            and message.domain in _STANDARD_DOMAINS
        ):
            raise ZooError(
                f"{path} has a {message.op_type} node ({message.name or 'unnamed'}), whose cost the file's data "
                f"decides; zoo runs only graphs without control flow, as `zoo export` writes them"
            )
        _bound(total, path, "its weights")
    one = onnx.ModelProto()
    one.CopyFrom(proto)
    del one.graph.value_info[:]  # worked out anew, not taken from the file
    for value in [*one.graph.input, *one.graph.output]:  # the batch axis at 1: every other size must follow
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.dim_value = 1
    try:
        inferred = onnx.shape_inference.infer_shapes(one, strict_mode=True, data_prop=True)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ZooError(f"{path}: the sizes of its tensors cannot be worked out before it runs ({detail})") from exc
    graph = inferred.graph
    for value in [*graph.value_info, *graph.output]:
        tensor = value.type.tensor_type
        known = value.type.HasField("tensor_type") and tensor.HasField("shape")
        if not known or any(not d.HasField("dim_value") for d in tensor.shape.dim):
            raise ZooError(
                f"{path}: the size of {value.name} is not known before it runs (the data it is given decides it), "
                f"so zoo will not run it; export the model with `zoo export`"
            )
        dims = tensor.shape.dim
        total += _elements(d.dim_value for d in dims) * _itemsize(tensor.elem_type)
        _bound(total, path, f"its tensors up to {value.name}")


def _itemsize(data_type: int) -> int:
    from onnx import helper

    try:
        return int(helper.tensor_dtype_to_np_dtype(data_type).itemsize) or 8
    except (KeyError, TypeError, ValueError):
        return 8


def _bound(total: int, path: Path, what: str) -> None:
    if total > MAX_BYTES_PER_IMAGE:
        raise ZooError(
            f"{path}: {what} would take {total / 2**20:,.0f} MiB for one image, more than the "
            f"{MAX_BYTES_PER_IMAGE >> 20:,} MiB zoo allows an ONNX file; it is not a small image classifier"
        )
