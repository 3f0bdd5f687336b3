"""Layer-by-layer summaries of a model: output shapes, parameter counts and multiply-accumulates (PyTorch's
``FlopCounterMode``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zoo.registry import Shape

__all__ = ["Layer", "count_macs", "count_parameters", "summarize"]


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    tensors: tuple[int, ...]
    """Sizes of the layer's trainable parameter tensors (weight, bias), as tutorials print them."""
    macs: int
    """Multiply-accumulates per image inside the layer (convolutions, matrix products), by ``FlopCounterMode``."""

    @property
    def params(self) -> int:
        return sum(self.tensors)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def summarize(model: nn.Module, input_shape: Shape) -> list[Layer]:
    """Run one image of zeros through ``model`` and describe every leaf layer it passes, in order; each layer's
    multiply-accumulates as PyTorch's ``FlopCounterMode`` counts them (half its FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    seen: list[tuple[str, nn.Module, tuple[int, ...]]] = []
    handles = [
        module.register_forward_hook(lambda m, _, out, name=name: seen.append((name, m, tuple(out.shape[1:]))))
        for name, module in model.named_modules()
        if not any(module.children())
    ]
    try:
        counts = _count(model, input_shape, FlopCounterMode(display=False)).get_flop_counts()
    finally:
        for handle in handles:
            handle.remove()
    root = type(model).__name__
    return [
        Layer(
            name,
            type(m).__name__,
            shape,
            tuple(p.numel() for p in m.parameters(recurse=False) if p.requires_grad),
            sum(counts.get(f"{root}.{name}", {}).values()) // 2,
        )
        for name, m, shape in seen
    ]


def count_macs(model: nn.Module, input_shape: Shape) -> int:
    """Multiply-accumulates for one image, everything the forward computes included: matrix products outside any
    layer (a ViT's q·kᵀ) too, as PyTorch's ``FlopCounterMode`` counts them (convolutions, matrix products,
    attention; elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    return int(_count(model, input_shape, FlopCounterMode(display=False)).get_total_flops()) // 2


def _count(model: nn.Module, input_shape: Shape, counter: Any) -> Any:
    training = model.training
    try:
        model.eval()
        with torch.no_grad(), counter:
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(training)
    return counter
