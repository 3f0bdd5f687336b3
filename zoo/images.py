"""Reading image files the way the training data looked: grey or RGB, resized, as uint8 C×H×W (no torch needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from zoo.errors import ZooError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["read_image"]


def read_image(path: Path, shape: tuple[int, int, int], invert: bool = False) -> np.ndarray:
    """An image file of any size and colour mode as uint8 C×H×W for a model taking ``shape`` (C, H, W)."""
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as file:
            img = ImageOps.exif_transpose(file).convert("L" if shape[0] == 1 else "RGB")
        img = img.resize((shape[2], shape[1]), Image.Resampling.BILINEAR)
        if invert:
            img = ImageOps.invert(img)
    except FileNotFoundError as exc:
        raise ZooError(f"{path} does not exist; check the path") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        reason = "not an image zoo can read" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise ZooError(f"{path}: {reason}; give a PNG or JPEG file") from exc
    pixels = np.asarray(img, dtype=np.uint8).reshape(shape[1], shape[2], shape[0])
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))
