"""Published weights: ``ARCH:TAG`` names, their files (package data or a cached download) checked by sha256 before
every use, and ``zoo publish``, which makes a run into a file and its record."""

from __future__ import annotations

import importlib.resources
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from zoo import runs
from zoo.errors import ZooError
from zoo.files import atomic_path, cache_root, sha256, write_json
from zoo.loader import get_registry
from zoo.registry import Weights

__all__ = ["fetch", "named_weights", "packaged", "publish", "source_path", "split_name", "train_command"]

_NAME = re.compile(r"([A-Za-z][A-Za-z0-9_-]*):([A-Za-z0-9][A-Za-z0-9_-]*)")
_BLOCK = 1 << 16


def split_name(text: str) -> tuple[str, str] | None:
    """``("cnn32", "mnist")`` for ``"cnn32:mnist"``; None for anything that is not ``ARCH:TAG``."""
    match = _NAME.fullmatch(text.strip())
    return (match[1], match[2]) if match else None


def named_weights(text: str | Path) -> Weights | None:
    """The published weights a RUN_OR_WEIGHTS argument names; None for a path that exists (it wins) or any other
    text that is not ``ARCH:TAG``."""
    parts = None if Path(text).exists() else split_name(str(text))
    return get_registry().find_weights(*parts) if parts else None


def source_path(text: str | Path) -> Path:
    """What a RUN_OR_WEIGHTS argument names on disk: a path that exists, else ``ARCH:TAG``'s verified file."""
    weights = named_weights(text)
    return fetch(weights) if weights else Path(text)


def _package_file(w: Weights) -> Path:
    package, _, relative = w.file.partition(":")
    try:
        return Path(str(importlib.resources.files(package).joinpath(relative)))
    except ModuleNotFoundError:
        return Path(package.replace(".", "/")) / relative  # reported as missing by fetch


def _cached_file(w: Weights) -> Path:
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
    path = _cached_file(w)
    if not path.is_file():
        _download(w, path, progress)
    return _check(w, path, "delete it, and zoo downloads it again")


def _download(w: Weights, path: Path, progress: bool) -> None:
    """Stream ``w.url`` into ``path`` through a temporary file: it lands only whole, of its size and sha256."""
    import hashlib
    import http.client
    import urllib.error
    import urllib.request

    offline = f"fetch {w.url} yourself and save it as {path}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with (
            urllib.request.urlopen(w.url, timeout=30) as response,
            atomic_path(path) as tmp,
            tmp.open("wb") as out,
            _bar(w, progress) as bar,
        ):
            digest, received = hashlib.sha256(), 0
            while block := response.read(_BLOCK):
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


def publish(
    run: str | Path,
    tag: str | None = None,
    out: str | Path = ".",
    *,
    url: str = "",
    default: bool = False,
    data_dir: str | Path | None = None,
    notes: str = "",
) -> dict[str, Any]:
    """Make a finished run into published weights: ``OUT/ARCH-TAG.safetensors`` and its record ``OUT/ARCH-TAG.json``.

    The accuracy recorded is what ``zoo eval`` measures on the copied file, so ``zoo eval ARCH:TAG`` reproduces it.
    Returns the record: ``zoo.Weights.from_json(record, file="package:path")`` (or ``url=``) registers it.
    """
    from zoo.inference import evaluate, load_model
    from zoo.machine import describe_machine
    from zoo.summary import summarize
    from zoo.training import TrainConfig

    source = Path(run)
    if not (source / runs.SUMMARY).is_file():
        raise ZooError(f"{source} is not a finished run (no {runs.SUMMARY}); publish a run that `zoo train` completed")
    config = json.loads((source / runs.CONFIG).read_text())
    settings, summary = config["train"], json.loads((source / runs.SUMMARY).read_text())
    model, card = load_model(source)
    tag = tag or settings["dataset"]
    target = Path(out) / f"{card.architecture}-{tag}.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        shutil.copyfile(source / runs.BEST, tmp)
    scored = evaluate(target, data_dir=data_dir or config.get("data_dir"), out=source / f"eval-{tag}")
    layers = summarize(model, card.input_shape)
    record = {
        "architecture": card.architecture,
        "tag": tag,
        "sha256": sha256(target),
        "size": target.stat().st_size,
        "url": url,
        "dataset": settings["dataset"],
        **{k: v for k, v in card.to_json().items() if k in ("classes", "input_shape", "mean", "std")},
        "accuracy": scored.accuracy,
        "loss": scored.evaluation.loss,
        "params": sum(l.params for l in layers),
        "macs": sum(l.macs for l in layers),
        "command": train_command(settings),
        "seed": settings["seed"],
        "recipe": TrainConfig(**settings).describe(),
        "train_seconds": round(summary["train_seconds"], 1),
        "machine": config.get("machine") or describe_machine(settings["threads"]),
        "zoo_version": config["zoo_version"],
        "torch_version": config["torch_version"],
        "default": default,
        "notes": notes,
    }
    Weights.from_json(record, file="" if url else "package:path")  # the record must make valid weights
    write_json(target.with_suffix(".json"), record)
    return record
