"""Decoding image files, which are untrusted input: one bounded decoder for prediction and folder data sets alike.

Every way a file can fail (missing, not an image, truncated, a decompression bomb) is a ``ZooError`` naming that file,
so a caller can report it and go on with the others. No torch needed.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from zoo.errors import ZooError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = ["GREY_MODES", "MAX_PIXELS", "decode", "image_mode", "normalize", "read_image", "resize"]

MAX_PIXELS = 40_000_000
"""The largest image zoo decodes, in pixels: more than most cameras take, yet a few hundred megabytes of memory at most.
A file of a few hundred kilobytes can declare a 20000x20000 image (a decompression bomb): the size is checked first."""

GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
"""PIL modes of images stored as greyscale."""

_WIDE_TOP = {"F": 1.0, "I": 65535.0, "I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0}
"""The nominal white of each PIL mode wider than 8 bits: "I" images come from 16-bit PNG and TIFF files."""


def normalize(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 pixels (C×H×W, or N×C×H×W) as a model's float32 input: scaled to [0, 1], then (x - mean) / std per
    channel."""
    import numpy as np

    mean_, std_ = (np.asarray(v, dtype=np.float32).reshape(-1, 1, 1) for v in (mean, std))
    return ((pixels.astype(np.float32) / 255 - mean_) / std_).astype(np.float32)


def read_image(path: Path | BinaryIO, shape: tuple[int, int, int]) -> np.ndarray:
    """An image file (or its bytes, as a binary file object) of any size and colour mode as uint8 C×H×W for a model
    taking ``shape`` (C, H, W)."""
    import numpy as np

    pixels = decode(path, (shape[1], shape[2]), grey=shape[0] == 1).reshape(shape[1], shape[2], shape[0])
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def decode(path: Path | BinaryIO, size: tuple[int, int] | None, grey: bool) -> np.ndarray:
    """An image file as uint8 pixels, H×W when ``grey``, H×W×3 otherwise, resized to ``size`` (H, W) by ``resize``.

    In order: the header is read and an image of more than ``MAX_PIXELS`` refused before any pixel is decoded; the
    EXIF orientation is applied (a phone's portrait photo stands upright); images wider than 8 bits are scaled to
    0..255 (see ``_eight_bit``); the result is converted to grey or RGB, then resized.
    """
    import numpy as np
    from PIL import ImageOps

    with _opened(path) as file:
        ImageOps.exif_transpose(file, in_place=True)  # in place: no copy of a large photo
        img = _eight_bit(file).convert("L" if grey else "RGB")
        if size is not None:
            img = resize(img, size)
        return np.asarray(img, dtype=np.uint8)


def resize(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``img`` resized to ``size`` (H, W): by averaging the pixels each new one covers (box) where it shrinks, bilinear
    where it grows.

    Box averaging undoes exactly an enlargement by a whole factor (nearest-neighbour, as image editors zoom), and
    it keeps most accuracy on smoothly enlarged images too, where bilinear shrinking blurs each pixel into its
    neighbours: on FashionMNIST's test split enlarged 4x, lenet_bn keeps 92.16% (box) against 91.31% (bilinear)
    (``tests/benchmarks/resize_filters.py``).
    """
    from PIL import Image

    height, width = size
    if img.size == (width, height):
        return img
    shrinks = width <= img.width and height <= img.height
    return img.resize((width, height), Image.Resampling.BOX if shrinks else Image.Resampling.BILINEAR)


def image_mode(path: Path) -> str:
    """The PIL mode an image file is stored in, from its header alone."""
    with _opened(path) as file:
        return file.mode


@contextmanager
def _opened(path: Path | BinaryIO) -> Iterator[Image.Image]:
    """The file opened lazily (header read, no pixels yet) and within ``MAX_PIXELS``; any failure inside the block,
    decoding included, becomes a ``ZooError`` naming the file."""
    from PIL import Image, UnidentifiedImageError

    name = "the image sent" if hasattr(path, "read") else str(path)
    limit = f"more than zoo decodes ({MAX_PIXELS // 1_000_000} megapixels); resize it first"
    try:
        with warnings.catch_warnings():
            # Image.open warns above PIL's Image.MAX_IMAGE_PIXELS (89 megapixels) and refuses above twice that. zoo's
            # limit, checked right below, is lower, so that warning would only repeat it; PIL's global is left alone.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as file:
                width, height = file.size
                if width * height > MAX_PIXELS:
                    raise ZooError(f"{name} is {width}x{height} pixels, {limit}")
                yield file
    except ZooError:
        raise
    except FileNotFoundError as exc:
        raise ZooError(f"{name} does not exist; check the path") from exc
    except Image.DecompressionBombError as exc:
        # Raised by Image.open itself, before the size can be read from the file; its message has the pixel count.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)) / 1e6:.0f} megapixels" if found else "larger than PIL's own limit"
        raise ZooError(f"{name} is {size}, {limit}") from exc
    except UnidentifiedImageError as exc:
        raise ZooError(f"{name}: not an image zoo can read; give a PNG or JPEG file") from exc
    except Exception as exc:
        # Decoders fail on malformed files in many ways (OSError, ValueError, SyntaxError, struct.error, IndexError…):
        # whichever it is, this file is broken, not the program, and the other files can still be read.
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ZooError(f"{name}: {reason}; give a PNG or JPEG file") from exc


def _eight_bit(img: Image.Image) -> Image.Image:
    """``img`` with samples wider than 8 bits (16-bit, 32-bit integer or float grey) scaled to 8-bit grey ("L").

    Values within the mode's nominal range, 0..1 for float and 0..65535 for integers, are scaled by 255 / its top, so
    a float image in [0, 1] or a 16-bit scan keeps its brightness. Values outside it (a float image in other units,
    32-bit data) are stretched from their minimum to their maximum; NaN and infinities count as 0.
    Other modes are returned as they are: PIL converts them to grey or RGB correctly.
    """
    import numpy as np
    from PIL import Image

    top = _WIDE_TOP.get(img.mode)
    if top is None:
        return img
    values = np.asarray(img, dtype=np.float32)
    values = np.where(np.isfinite(values), values, np.float32(0))
    low, high = float(values.min()), float(values.max())
    if low >= 0 and high <= top:
        scaled = values * (255 / top)
    else:
        scaled = (values - low) * (255 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))
