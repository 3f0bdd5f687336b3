"""Shared fixtures: fake plugin distributions on sys.path, IDX files, a clean registry per test."""

from __future__ import annotations

import gzip
import struct
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from zoo.loader import get_registry

FakeDist = Callable[..., Path]


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test discovers plugins anew, with the plugin switches unset."""
    for var in ("ZOO_DISABLE_PLUGIN_AUTOLOAD", "ZOO_PLUGINS", "ZOO_DATA_DIR", "ZOO_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    get_registry.cache_clear()
    yield
    get_registry.cache_clear()


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDist]:
    """Make an installed-looking distribution: a .dist-info with ``zoo`` entry points, and its module, on sys.path."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    modules: list[str] = []

    def make(name: str, source: str, version: str = "1.0", module: str | None = None, ep_name: str = "main") -> Path:
        module = module or name.replace("-", "_")
        modules.append(module)
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[zoo]\n{ep_name} = {module}\n")
        get_registry.cache_clear()
        return site

    yield make
    for module in modules:  # the next test's module of the same name must be imported afresh
        sys.modules.pop(module, None)


def write_idx(path: Path, array: bytes, dims: tuple[int, ...], compress: bool = False) -> None:
    """Write an IDX file (unsigned bytes), the format MNIST ships in."""
    header = struct.pack(">I", 0x0800 + len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    data = header + array
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.fixture
def idx_root(tmp_path: Path) -> Callable[[str, int], Path]:
    """A data root with MNIST-format files for ``folder`` (MNIST or FashionMNIST): n train and n test images."""

    def make(folder: str, n: int = 20) -> Path:
        raw = tmp_path / "data" / folder / "raw"
        raw.mkdir(parents=True)
        for prefix in ("train", "t10k"):
            pixels = bytes((i * 7 + j) % 256 for i in range(n) for j in range(28 * 28))
            write_idx(raw / f"{prefix}-images-idx3-ubyte", pixels, (n, 28, 28))
            write_idx(raw / f"{prefix}-labels-idx1-ubyte", bytes(i % 10 for i in range(n)), (n,))
        return tmp_path / "data"

    return make
