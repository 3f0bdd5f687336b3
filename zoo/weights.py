"""Published weights: ``ARCH:TAG`` names, and their files (package data or a cached download) checked by sha256 before
every use."""

from __future__ import annotations

import importlib.resources
import json
import re
import sys
from pathlib import Path
from typing import Any

from zoo.errors import ZooError
from zoo.files import atomic_path, cache_root, sha256
from zoo.loader import get_registry
from zoo.registry import Weights

__all__ = ["cached_file", "fetch", "packaged", "split_name", "train_command"]

_NAME = re.compile(r"([A-Za-z][A-Za-z0-9_-]*):([A-Za-z0-9][A-Za-z0-9_-]*)")
_BLOCK = 1 << 16
_READ_TIMEOUT_S = 30
"""The longest wait for the server's next bytes."""
_GRACE_S, _MIN_BYTES_PER_S = 30.0, 32 << 10
"""A download must end within ``_GRACE_S`` seconds plus its size at ``_MIN_BYTES_PER_S``: a server that sends a
byte now and then never trips the read timeout, so the whole download has a deadline."""


def split_name(text: str) -> tuple[str, str] | None:
    """``("cnn32", "mnist")`` for ``"cnn32:mnist"``; None for anything that is not ``ARCH:TAG``."""
    match = _NAME.fullmatch(text.strip())
    return (match[1], match[2]) if match else None


def _package_file(w: Weights) -> Path:
    package, _, relative = w.file.partition(":")
    try:
        return Path(str(importlib.resources.files(package).joinpath(relative)))
    except ModuleNotFoundError:
        return Path(package.replace(".", "/")) / relative  # reported as missing by fetch


def cached_file(w: Weights) -> Path:
    """Where a downloaded file of ``w`` is kept."""
    return cache_root() / "weights" / f"{w.architecture}-{w.tag}-{w.sha256[:12]}.safetensors"


def _check(w: Weights, path: Path, fix: str) -> Path:
    actual = sha256(path)
    if actual != w.sha256:
        raise ZooError(
            f"{path} is not the file of weights {w.name}: its sha256 is {actual}, the record says "
            f"{w.sha256}; zoo will not load it ({fix})"
        )
    return path


def fetch(w: Weights, progress: bool = True) -> Path:
    """The local path of ``w``'s file, its sha256 checked; a URL's file is downloaded into the cache once."""
    if w.file:
        path = _package_file(w)
        registry = get_registry()
        plugin = registry.provider(w) if registry.weights.get(w.name) is w else None
        label, distribution = (plugin.label, plugin.distribution) if plugin else (w.file.partition(":")[0],) * 2
        if not path.is_file():
            raise ZooError(
                f"the file of weights {w.name} is missing from the install of {label} ({path}); "
                f"reinstall it: pip install --force-reinstall {distribution}"
            )
        return _check(w, path, f"reinstall {distribution}")
    path = cached_file(w)
    if not path.is_file():
        _download(w, path, progress)
    return _check(w, path, "delete it, and zoo downloads it again")


def _download(w: Weights, path: Path, progress: bool) -> None:
    """Stream ``w.url`` into ``path`` through a temporary file: it lands only whole, of its size and sha256."""
    import hashlib
    import http.client
    import time
    import urllib.error
    import urllib.parse
    import urllib.request

    class SameHost(urllib.request.HTTPRedirectHandler):
        """Follows a redirect only within the host the record names: the record chose that server."""

        def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
            if urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
                raise ZooError(
                    f"{w.url} redirects to another host ({newurl}); zoo follows redirects only within the host "
                    f"weights {w.name} name, so nothing was saved: {offline}"
                )
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    offline = f"fetch {w.url} yourself and save it as {path}"
    limit = _GRACE_S + w.size / _MIN_BYTES_PER_S
    deadline = time.monotonic() + limit
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with (
            urllib.request.build_opener(SameHost).open(w.url, timeout=_READ_TIMEOUT_S) as response,
            atomic_path(path) as tmp,
            tmp.open("wb") as out,
            _bar(w, progress) as bar,
        ):
            digest, received = hashlib.sha256(), 0
            while block := response.read1(_BLOCK):  # what has arrived, so the deadline is checked as it comes
                if time.monotonic() > deadline:
                    raise ZooError(
                        f"the download of {w.url} is too slow ({received:,} of {w.size:,} bytes in {limit:.0f} s, "
                        f"the most zoo waits for a file of this size); nothing was saved: try again later, or {offline}"
                    )
                received += len(block)
                if received > w.size:
                    raise ZooError(
                        f"{w.url} sends more than the {w.size:,} bytes weights {w.name} have; "
                        f"it is not their file, so nothing was saved"
                    )
                digest.update(block)
                out.write(block)
                bar.update(len(block))
            if received != w.size:
                raise ZooError(
                    f"the download of {w.url} stopped after {received:,} of {w.size:,} bytes; "
                    f"nothing was saved: run the command again, or {offline}"
                )
            if digest.hexdigest() != w.sha256:
                raise ZooError(
                    f"{w.url} sent a file whose sha256 is {digest.hexdigest()}, not {w.sha256} as weights "
                    f"{w.name} record; it was not saved (the server's file has changed)"
                )
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ZooError(f"could not download weights {w.name} ({' '.join(str(reason).split())}); {offline}") from exc


def _bar(w: Weights, progress: bool) -> Any:
    from tqdm import tqdm  # type: ignore[import-untyped]

    return tqdm(
        total=w.size,
        unit="B",
        unit_scale=True,
        desc=f"downloading {w.name}",
        file=sys.stderr,
        leave=False,
        disable=not progress,
    )


def packaged(package: str, folder: str = "weights") -> list[Weights]:
    """The weights ``zoo publish`` wrote into ``package``'s ``folder``: each NAME.json record with its NAME.safetensors.

    For a plugin's ``register_weights`` hook: ``for w in zoo.weights.packaged(__package__): register(w)``.
    """
    found: list[Weights] = []
    directory = importlib.resources.files(package).joinpath(folder)
    if not directory.is_dir():
        return found
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            record = json.loads(entry.read_text())
            found.append(Weights.from_json(record, file=f"{package}:{folder}/{entry.name[:-5]}.safetensors", url=""))
    return found


def train_command(config: dict[str, Any]) -> str:
    """The ``zoo train`` command for a run's settings, every one of them spelt out (data directory aside)."""
    options = []
    for key, value in config.items():
        if key in ("architecture", "dataset", "notes", "device") or value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            if key == "grayscale":
                options.append("--grayscale" if value else "--color")
            elif value:
                options.append(flag)
            continue
        options += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return " ".join(["zoo", "train", config["architecture"], config["dataset"], *options])
