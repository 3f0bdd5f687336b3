"""Seven-segment digits drawn on the fly: a data set that needs no download, for tests and offline use."""

from __future__ import annotations

import torch

__all__ = ["generate"]

# Segment end points in glyph units: x in [0, 1] left to right, y in [0, 2] top to bottom.
_SEGMENTS = torch.tensor(
    [
        [[0, 0], [1, 0]],  # a: top
        [[1, 0], [1, 1]],  # b: upper right
        [[1, 1], [1, 2]],  # c: lower right
        [[0, 2], [1, 2]],  # d: bottom
        [[0, 1], [0, 2]],  # e: lower left
        [[0, 0], [0, 1]],  # f: upper left
        [[0, 1], [1, 1]],  # g: middle
    ],
    dtype=torch.float32,
)
_DIGITS = ["abcdef", "bc", "abdeg", "abcdg", "bcfg", "acdfg", "acdefg", "abc", "abcdefg", "abcdfg"]
_LIT = torch.tensor([[s in segments for s in "abcdefg"] for segments in _DIGITS])


def _uniform(g: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g)


def _ink(labels: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """Stroke coverage in [0, 1], N×size×size, for digits with random size, slant, tilt, place and stroke."""
    n = len(labels)
    height = size * _uniform(g, n, 0.45, 0.7)
    width = height * _uniform(g, n, 0.3, 0.55)
    slant = _uniform(g, n, -0.3, 0.3)
    angle = _uniform(g, n, -0.2, 0.2)
    centre = size / 2 + size * 0.1 * (2 * torch.rand(n, 2, generator=g) - 1)
    stroke = size * _uniform(g, n, 0.05, 0.1)

    x = (_SEGMENTS[..., 0] - 0.5) * width[:, None, None]  # N×7×2
    y = (_SEGMENTS[..., 1] / 2 - 0.5) * height[:, None, None]
    x = x - slant[:, None, None] * y  # italic: the top leans right
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    ends = torch.stack([cos * x - sin * y, sin * x + cos * y], -1) + centre[:, None, None]  # N×7×2×2

    coords = torch.arange(size, dtype=torch.float32) + 0.5
    pixels = torch.stack(torch.meshgrid(coords, coords, indexing="xy"), -1).reshape(1, 1, -1, 2)  # 1×1×P×2
    start, direction = ends[:, :, None, 0], (ends[:, :, 1] - ends[:, :, 0])[:, :, None]  # N×7×1×2
    t = ((pixels - start) * direction).sum(-1) / (direction * direction).sum(-1).clamp_min(1e-6)
    nearest = start + t.clamp(0, 1)[..., None] * direction
    distance = (pixels - nearest).norm(dim=-1)  # N×7×P
    coverage: torch.Tensor = (stroke[:, None, None] / 2 + 0.5 - distance).clamp(0, 1) * _LIT[labels][..., None]
    return coverage.amax(1).reshape(n, size, size)


def generate(n: int, size: int, channels: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (uint8, N×channels×size×size) of digits 0-9 and their labels, the same for the same seed."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = torch.empty(n, channels, size, size, dtype=torch.uint8)
    for lo in range(0, n, 256):  # chunks bound the N×7×pixels distance tensor
        hi = min(n, lo + 256)
        ink = _ink(labels[lo:hi], size, g)[:, None]
        if channels == 1:
            fg, bg = _uniform(g, hi - lo, 0.6, 1.0), torch.zeros(hi - lo)
            fg, bg = fg[:, None], bg[:, None]
        else:  # random colours, at least 0.35 apart in brightness so the digit stays visible
            bg = torch.rand(hi - lo, channels, generator=g)
            shift = _uniform(g, hi - lo, 0.35, 0.8) * torch.where(bg.mean(1) > 0.5, -1.0, 1.0)
            fg = (bg + shift[:, None] + 0.25 * torch.randn(hi - lo, channels, generator=g)).clamp(0, 1)
        picture = bg[..., None, None] * (1 - ink) + fg[..., None, None] * ink
        noise = 0.06 * torch.randn(picture.shape, generator=g)
        images[lo:hi] = (picture + noise).clamp(0, 1).mul(255).round().to(torch.uint8)
    return images, labels
