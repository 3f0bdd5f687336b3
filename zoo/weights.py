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
from zoo.files import atomic_path, cache_root, read_json, sha256, write_json
from zoo.loader import get_registry
from zoo.registry import Weights, check_name

__all__ = ["fetch", "named_weights", "packaged", "publish", "source_path", "split_name", "train_command"]

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


def publish(
    run: str | Path,
    tag: str | None = None,
    out: str | Path = ".",
    *,
    url: str = "",
    default: bool = False,
    data_dir: str | Path | None = None,
    notes: str = "",
    force: bool = False,
) -> dict[str, Any]:
    """Make a finished run into published weights: ``OUT/ARCH-TAG.safetensors`` and its record ``OUT/ARCH-TAG.json``.

    The accuracy recorded is what ``zoo eval`` measures on the file, so ``zoo eval ARCH:TAG`` reproduces it.
    Weights already published in ``out`` under that name are replaced only with ``force=True``.
    Returns the record: ``zoo.Weights.from_json(record, file="package:path")`` (or ``url=``) registers it.
    """
    from zoo.inference import evaluate, load_model
    from zoo.machine import describe_machine
    from zoo.summary import summarize
    from zoo.training import TrainConfig

    source = Path(run)
    if not (source / runs.SUMMARY).is_file():
        raise ZooError(f"{source} is not a finished run (no {runs.SUMMARY}); publish a run that `zoo train` completed")
    config = runs.open_run(source)
    settings, summary = config["train"], read_json(source / runs.SUMMARY)
    model, card = load_model(source)
    tag = tag or settings["dataset"]
    try:  # every name is checked before anything is written
        check_name("weights tag", tag, ())
    except ValueError as exc:
        raise ZooError(f"--tag {tag!r}: {exc}") from None
    target = Path(out) / f"{card.architecture}-{tag}.safetensors"
    record_path = target.with_suffix(".json")
    existing = [str(p) for p in (target, record_path) if p.exists()]
    if existing and not force:
        raise ZooError(f"{' and '.join(existing)} already exist; pass --force to replace them, or another --tag")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ZooError(f"cannot write to {target.parent} ({exc.strerror}); pass --out DIR") from exc
    best = runs.find_weights(source)
    scored = evaluate(best, data_dir=data_dir or runs.recorded_data_dir(source), out=source / f"eval-{tag}")
    layers = summarize(model, card.input_shape)
    record = {
        "architecture": card.architecture,
        "tag": tag,
        "sha256": sha256(best),
        "size": best.stat().st_size,
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
    with atomic_path(target) as tmp:
        shutil.copyfile(best, tmp)
        # The record is what makes a file published weights, so an old one goes before its file is replaced and
        # the new one comes last: a process killed in between leaves a file without a record (not registered),
        # never a record beside another file.
        record_path.unlink(missing_ok=True)
    if sha256(target) != record["sha256"]:
        target.unlink()
        raise ZooError(f"{best} changed while it was being published; publish it again")
    write_json(record_path, record)
    return record
