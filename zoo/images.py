"""Reading image files the way the training data looked: grey or RGB, resized, as uint8 C×H×W (no torch needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from zoo.errors import ZooError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["light_background", "read_image"]


def light_background(pixels: np.ndarray) -> bool:
    """Whether an image's border (its outermost two pixels all round) is mostly light: dark ink on white paper."""
    border = [pixels[..., :2, :], pixels[..., -2:, :], pixels[..., :, :2], pixels[..., :, -2:]]
    return float(sum(b.sum() for b in border)) / sum(b.size for b in border) > 127.5


def read_image(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """An image file of any size and colour mode as uint8 C×H×W for a model taking ``shape`` (C, H, W)."""
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as file:
            img = ImageOps.exif_transpose(file).convert("L" if shape[0] == 1 else "RGB")
        img = img.resize((shape[2], shape[1]), Image.Resampling.BILINEAR)
    except FileNotFoundError as exc:
        raise ZooError(f"{path} does not exist; check the path") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        reason = "not an image zoo can read" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise ZooError(f"{path}: {reason}; give a PNG or JPEG file") from exc
    pixels = np.asarray(img, dtype=np.uint8).reshape(shape[1], shape[2], shape[0])
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))
