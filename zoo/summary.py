"""Layer-by-layer summaries of a model: output shapes, parameter counts and multiply-accumulates."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zoo.registry import Shape

__all__ = ["Layer", "count_parameters", "summarize"]


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    tensors: tuple[int, ...]
    """Sizes of the layer's trainable parameter tensors (weight, bias), as tutorials print them."""
    macs: int
    """Multiply-accumulates per image; counted for convolutions and linear layers."""

    @property
    def params(self) -> int:
        return sum(self.tensors)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _macs(module: nn.Module, output: torch.Tensor) -> int:
    per_image = output[0].numel()
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return per_image * module.in_channels // module.groups * kh * kw
    if isinstance(module, nn.Linear):
        return per_image * module.in_features
    return 0


def summarize(model: nn.Module, input_shape: Shape) -> list[Layer]:
    """Run one image of zeros through ``model`` and describe every leaf layer it passes, in order."""
    layers: list[Layer] = []

    def record(name: str, module: nn.Module, output: torch.Tensor) -> None:
        tensors = tuple(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)
        layers.append(Layer(name, type(module).__name__, tuple(output.shape[1:]), tensors, _macs(module, output)))

    handles = [
        module.register_forward_hook(lambda m, _, out, name=name: record(name, m, out))
        for name, module in model.named_modules()
        if not any(module.children())
    ]
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return layers
