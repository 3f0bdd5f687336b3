"""ONNX graphs every consumer can run and read: explicit pads, nodes that name their PyTorch module, only the
opsets used."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["describe_nodes", "drop_unused_opsets", "explicit_pads"]


def explicit_pads(proto: Any) -> None:
    """Replace each ``auto_pad`` of SAME_UPPER, SAME_LOWER or VALID (what torch writes for ``padding="same"``) by
    the explicit ``pads`` it means: the attribute is legacy in the ONNX spec, and several converters refuse it.

    The input's spatial sizes come from shape inference; they are known, since only the batch axis is dynamic.
    """
    import onnx
    from onnx import helper

    inferred = onnx.shape_inference.infer_shapes(proto)
    sizes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
             for v in [*inferred.graph.input, *inferred.graph.value_info]}  # fmt: skip
    weights = {t.name: list(t.dims) for t in proto.graph.initializer}
    for node in proto.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        mode = attrs.get("auto_pad", b"NOTSET").decode()
        if mode == "NOTSET":
            continue
        spatial = sizes[node.input[0]][2:]
        kernel = attrs.get("kernel_shape") or weights[node.input[1]][2:]
        strides = attrs.get("strides") or [1] * len(spatial)
        dilations = attrs.get("dilations") or [1] * len(spatial)
        begin, end = [], []
        for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
            if not size:
                raise ValueError(f"{node.name}: auto_pad over an axis of unknown size; export with a fixed image size")
            total = 0 if mode == "VALID" else max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            low = total // 2 if mode == "SAME_UPPER" else total - total // 2  # SAME_UPPER puts the odd pixel last
            begin.append(low)
            end.append(total - low)
        kept = [a for a in node.attribute if a.name != "auto_pad"]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute("pads", begin + end)])


def describe_nodes(proto: Any, model: nn.Module) -> None:
    """Give each node the PyTorch module it came from as its doc string (``features.0 (Conv2d)``), read from the
    scope torch's exporter names it by (``/features/features.0/Conv``); a node of the model's own forward names
    the model's class."""
    modules = dict(model.named_modules())
    for node in proto.graph.node:
        scopes = node.name.strip("/").split("/")[:-1]
        path = next((s for s in reversed(scopes) if s in modules), "")
        node.doc_string = f"{path} ({type(modules[path]).__name__})" if path else type(model).__name__


def drop_unused_opsets(proto: Any) -> None:
    """Keep the opset imports of the domains the graph's nodes use (the default domain always): a quantizer
    declares several it never uses, and each one is a dependency a consumer must satisfy."""
    used = {node.domain for node in proto.graph.node} | {""}
    kept = [o for o in proto.opset_import if o.domain in used]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
