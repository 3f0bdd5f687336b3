"""Built-in plugin: weights zoo trained for the built-in architectures, shipped in weights/ beside this module."""

from __future__ import annotations

from collections.abc import Callable

import zoo
from zoo import Weights
from zoo.weights import packaged


@zoo.hookimpl
def register_weights(register: Callable[[Weights], None]) -> None:
    for weights in packaged(__package__ or "zoo.plugins"):
        register(weights)
