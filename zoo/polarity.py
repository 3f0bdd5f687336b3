"""Which way round grey images are: the one rule `zoo predict`, the Python API and weights' transforms share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zoo.errors import SettingError

__all__ = ["check_invert", "light_background", "should_invert"]


def light_background(pixels: Any) -> bool:
    """Whether an image's border (its outermost two pixels all round) is mostly light: dark ink on white paper."""
    border = [pixels[..., :2, :], pixels[..., -2:, :], pixels[..., :, :2], pixels[..., :, -2:]]
    return bool(float(sum(b.sum() for b in border)) / sum(b.size for b in border) > 127.5)


def check_invert(invert: object) -> bool | None:
    """``invert`` when it is True, False or None; a string such as "no" would otherwise count as true."""
    if invert is not None and not isinstance(invert, bool):
        raise SettingError("invert", f"takes True, False or None (decide per image), not {invert!r}")
    return invert


def should_invert(pixels: Any, mean: Sequence[float], invert: bool | None) -> bool:
    """Whether to invert ``pixels`` (uint8, C×H×W, numpy) for a model whose training data had ``mean``: ``invert``
    when given, else whether a grey image's background is the opposite of the training data's (dark ink on white
    paper for an MNIST model, whose digits are light on black)."""
    if invert is not None:
        return invert
    return pixels.shape[0] == 1 and light_background(pixels) != (sum(mean) / len(mean) > 0.5)
