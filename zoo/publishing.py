"""``zoo publish``: a finished run made into published weights, a file and its record, measured as ``zoo eval``
measures them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from zoo import runs
from zoo.errors import ZooError
from zoo.evaluation import evaluate
from zoo.files import atomic_path, read_json, sha256, writable_dir, write_json
from zoo.machine import describe_machine
from zoo.references import ModelRef, resolve
from zoo.registry import Weights, check_name
from zoo.runtimes import load_model
from zoo.summary import count_macs, count_parameters
from zoo.training import TrainConfig
from zoo.weights import train_command

__all__ = ["publish"]


def publish(
    run: str | Path | ModelRef,
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
    ref = resolve(run)
    source = ref.run
    if ref.kind != "run" or source is None or not (source / runs.SUMMARY).is_file():
        raise ZooError(f"{ref} is not a finished run (no {runs.SUMMARY}); publish a run that `zoo train` completed")
    config = runs.open_run(source)
    settings, summary = config["train"], read_json(source / runs.SUMMARY)
    model, card = load_model(ref)
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
    writable_dir(target.parent, "pass --out DIR")
    best = ref.path
    scored = evaluate(ref, data_dir=data_dir, out=source / f"eval-{tag}")
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
        "params": count_parameters(model),
        "macs": count_macs(model, card.input_shape),
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
