"""The tiny MLP: flatten, 64 hidden units, ReLU, one score per class."""

from __future__ import annotations

import math

from torch import nn


class TinyMLP(nn.Sequential):
    def __init__(self, input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> None:
        super().__init__(nn.Flatten(), nn.Linear(math.prod(input_shape), 64), nn.ReLU(), nn.Linear(64, num_classes))
