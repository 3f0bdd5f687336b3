"""The shared trainer: any registered architecture on any registered data set, reproducible and resumable.

Every random draw is a function of (seed, epoch, step): the initial weights of the
seed, the shuffle of the epoch, dropout and augmentation of the step.  So a run
resumed from any step continues exactly as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from zoo import checkpoint, distributed, plots, runs
from zoo.card import new_card
from zoo.data import Normalizer, Split, affine, augment, batches, erase, load_splits, resolve_data_dir
from zoo.errors import SettingError, ZooError
from zoo.evaluation import Evaluation, report, score
from zoo.files import sha256, write_json, write_text
from zoo.folders import MAX_IMAGE_SIZE, find_dataset
from zoo.loader import get_registry
from zoo.machine import available_cpus, describe_machine
from zoo.references import resolve
from zoo.registry import Architecture, Dataset, Recipe, format_shape
from zoo.version import __version__

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "RunComplete",
    "RunResult",
    "TrainConfig",
    "TrainingDiverged",
    "TrainingInterrupted",
    "keep_freed_memory",
    "train",
    "train_one_epoch",
]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "onecycle", "cosine")
AUGMENTATIONS = ("none", "crop", "flip", "crop_flip", "affine", "erase", "crop_erase", "flip_erase",
                 "crop_flip_erase", "affine_erase")  # fmt: skip
Progress = Literal["bar", "lines", "none"]


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Recipe):
    """A recipe made concrete for one run: everything that decides what it computes; saved in config.json."""

    architecture: str
    dataset: str
    """The data set trained on."""
    recipe: str = "default"
    image_size: int | None = None
    """For a folder of images: resize them all to this many pixels square."""
    grayscale: bool | None = None
    """For a folder of images: read them as grey (True) or colour (False); default: as they are stored."""
    max_steps: int | None = None
    device: str = "auto"
    amp: bool = False
    threads: int = 1
    """CPU threads for PyTorch's kernels.  Part of the config because sums split over another number of
    threads round differently: the same seed gives bit-identical weights at the same thread count."""
    init: str | None = None
    """Start from these weights (``ARCH:TAG``, a run or a weights file) instead of random ones: fine-tuning."""

    def __post_init__(self) -> None:
        for name in ("architecture", "dataset", "recipe", "device", "optimizer", "schedule", "augment", "notes"):
            if not isinstance(getattr(self, name), str):
                raise SettingError(name, f"must be a string, got {getattr(self, name)!r}")
        if self.init is not None and not isinstance(self.init, str):
            raise SettingError("init", f"must be a string, got {self.init!r}")
        for name in ("lr", "weight_decay", "warmup", "val_split", "label_smoothing", "ema"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise SettingError(name, f"must be a finite number, got {value}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or not 1 <= self.threads <= 1024:
            raise SettingError("threads", f"must be an integer from 1 to 1024, got {self.threads}")
        for name in ("batch_size", "epochs", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
                raise SettingError(name, f"must be an integer from 0 to 2**63 - 1, got {value!r}")
        for name in ("lr", "batch_size", "epochs"):
            if not getattr(self, name) > 0:
                raise SettingError(name, f"must be positive, got {getattr(self, name)}")
        for name in ("limit", "max_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SettingError(name, f"must be at least 1, got {value}")
        if self.image_size is not None and not 1 <= self.image_size <= MAX_IMAGE_SIZE:
            raise SettingError("image_size", f"must be from 1 to {MAX_IMAGE_SIZE}, got {self.image_size}")
        if self.weight_decay < 0:
            raise SettingError("weight_decay", f"must not be negative, got {self.weight_decay}")
        if not 0 <= self.warmup < 1:
            raise SettingError("warmup", f"is a fraction of the steps in [0, 1), got {self.warmup}")
        if not 0 <= self.label_smoothing < 1:
            raise SettingError("label_smoothing", f"is a share of each target in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.ema < 1:
            raise SettingError("ema", f"is a decay in (0, 1), 0.999 say, or 0 for none; got {self.ema}")
        if not 0 <= self.val_split < 1:
            raise SettingError("val_split", f"is a fraction of the training images in [0, 1), got {self.val_split}")
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("augment", AUGMENTATIONS)):
            if getattr(self, name) not in allowed:
                raise SettingError(name, f"must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")


def resolve_config(arch: Architecture, dataset: Dataset, recipe: str = "default", **overrides: Any) -> TrainConfig:
    """The recipe's settings (``default`` or the tutorial's), with every option that is not None overriding them."""
    if recipe not in ("default", "tutorial"):
        raise SettingError("recipe", f"must be default or tutorial, got {recipe!r}")
    chosen = arch.tutorial_recipe if recipe == "tutorial" else arch.default_recipe
    if chosen is None:
        raise SettingError("recipe", f"tutorial: {arch.name} has none; use the default recipe")
    # Processes on one machine share its CPUs (torchrun may start several on one machine).
    threads = max(1, available_cpus() // distributed.current().local_world)
    given = {k: v for k, v in overrides.items() if v is not None}
    settings = {**dataclasses.asdict(chosen), "threads": threads, **given}
    if _fitted(given):  # the recipe's length, fitted to this data
        images = min(settings["limit"] or dataset.train_size, dataset.train_size) * (1 - settings["val_split"])
        settings["batch_size"], settings["epochs"] = fit_to_data(int(images), chosen.batch_size, chosen.epochs)
    settings.update(architecture=arch.name, dataset=dataset.ref, recipe=recipe)
    return TrainConfig(**settings)


def _fitted(overrides: dict[str, Any]) -> bool:
    """Whether the recipe's length is fitted to the data: unless a setting that fixes it was given."""
    return not {k for k, v in overrides.items() if v is not None} & {"batch_size", "epochs", "max_steps"}


MIN_STEPS = 300
"""Fewer optimiser steps than this rarely train a network from scratch (126 images at batch 128 for 5 epochs are
5 steps: one class for everything)."""
MIN_BATCH = 16


def fit_to_data(images: int, batch_size: int, epochs: int) -> tuple[int, int]:
    """A recipe's batch size and epochs for ``images`` training images: the batch halved (down to 16) until an epoch
    has 10 steps, then the epochs raised (up to 100) until the run has MIN_STEPS.  Data sets the recipe was written
    for (tens of thousands of images) keep it as it is."""
    while batch_size > MIN_BATCH and images // batch_size < 10:
        batch_size //= 2
    per_epoch = max(1, images // batch_size)
    return batch_size, max(epochs, min(100, math.ceil(MIN_STEPS / per_epoch)))


def lr_at(config: TrainConfig, step: int, total: int) -> float:
    """The learning rate for a step: a pure function of the step, so a resumed run needs no scheduler state."""
    progress = step / max(1, total)
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if config.schedule == "onecycle":  # linear warm-up from lr/25 over `warmup` of the steps, then cosine to lr/1e4
        warm = config.warmup
        if progress < warm:
            return config.lr * (0.04 + 0.96 * progress / warm)
        return config.lr * (1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (progress - warm) / (1 - warm))))
    return config.lr


def _seed(*parts: int) -> int:
    """Mix integers into one seed (a 64-bit multiplicative hash); the same parts always give the same seed."""
    value = 0
    for part in parts:
        value = (value * 0x9E3779B97F4A7C15 + part + 1) % (1 << 63)
    return value


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if name not in available:
        raise SettingError("device", f"must be auto, cpu, cuda or mps, got {name!r}")
    if not available[name]:
        raise SettingError("device", f"{name}: PyTorch sees no such device here; use auto or cpu")
    return torch.device(name)


def _make_optimizer(config: TrainConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    # The fused kernels update all parameters in one pass: fewer, larger operations per step.
    fused = device.type in ("cpu", "cuda")
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


def _match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give loaded optimizer state the memory layout of its parameter (channels_last for conv weights).

    Checkpoints store tensors contiguous; the fused optimizers walk parameter and state
    memory in step, so a layout mismatch would pair the wrong elements.
    """
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state[param]
            for name, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    state[name] = torch.empty_like(param).copy_(value)


def keep_freed_memory() -> None:
    """Keep freed activation buffers in glibc's heap instead of returning them to the system.

    Every step allocates and frees the same large buffers.  By default glibc unmaps
    or trims them, and the next step page-faults them back in: a quarter to a third
    of a CPU training step of mnist_cnn32 (tests/benchmarks/train_speed.py).  The setting holds for the whole
    process, so ``zoo train`` makes it and ``train`` does not: call this first to train as fast from Python.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_trim_threshold, 1 << 30)
    libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest allowed value


class TrainingInterrupted(ZooError):
    """Training stopped on SIGINT or SIGTERM after saving a checkpoint it can resume from."""


class TrainingDiverged(ZooError):
    """The loss became infinite or NaN; the weights of that moment are not saved."""


class RunComplete(ZooError):
    """``resume`` named a run that has already trained for all its epochs: there is nothing to continue."""


@contextmanager
def _interrupts(hint: str) -> Iterator[list[int]]:
    """Record SIGINT and SIGTERM instead of dying mid-step; the loop checks and saves.

    A second Ctrl-C stops at once, as TrainingInterrupted with ``hint``: every file is written whole
    or not at all, so the last checkpoint on disk is intact.
    """
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signum)

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals cannot be caught here
        yield received
        return
    try:
        yield received
    except KeyboardInterrupt:
        raise TrainingInterrupted(f"stopped at once by a second Ctrl-C; {hint}") from None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@dataclass
class EpochState:
    """Where training stands inside an epoch; saved with an interrupted run so that its metrics stay whole."""

    epoch: int
    step: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0


def train_one_epoch(
    model: nn.Module,
    split: Split,
    normalize: Normalizer,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    state: EpochState,
    steps_per_epoch: int,
    total_steps: int,
    stop: list[int],
    on_step: Any = None,
    group: distributed.Group = distributed.ONE,
    average: torch.optim.swa_utils.AveragedModel | None = None,
) -> bool:
    """Train from ``state.step`` to the end of the epoch, the step budget, or a signal; ``state`` is updated.
    Returns True if a signal stopped it: every process then stops at the same step.

    ``config.batch_size`` is the batch of all processes together: each takes its slice of every batch of the
    same seeded order, so that N processes compute what one would, N times faster where the hardware allows.
    ``average``, the weights' moving average (``--ema``), is updated after every step.
    """
    model.train()
    shuffle = torch.Generator().manual_seed(_seed(config.seed, state.epoch))
    order = torch.randperm(len(split), generator=shuffle)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    device = normalize.device
    pad = 4 if split.images.shape[-1] >= 32 else 2
    # Running sums stay on the device: reading them every step would make a GPU wait every step.
    loss_sum, correct = torch.zeros((), device=device), torch.zeros((), dtype=torch.long, device=device)

    def flush() -> None:
        nonlocal loss_sum, correct
        # Checked every 20 steps (reading the sums each step would stall a GPU), summed over the processes:
        # a loss that diverges in one stops them all at the same step.
        total_loss, total_correct = group.sum([float(loss_sum), float(correct)])
        if not math.isfinite(total_loss):
            raise TrainingDiverged(
                f"training diverged at epoch {state.epoch + 1}, step {state.step}: the loss is {total_loss}"
            )
        state.loss_sum += total_loss
        state.correct += int(total_correct)
        loss_sum, correct = loss_sum.zero_(), correct.zero_()

    start = time.perf_counter()
    share = config.batch_size // group.world
    stopped = False
    for images, labels in batches(split, config.batch_size, order, start=state.step, drop_last=True):
        global_step = state.epoch * steps_per_epoch + state.step
        # Stop on what the processes agreed, not on `stop` itself: a signal may land in one of them just after.
        stopped = group.any(bool(stop))
        if stopped and not stop:  # a signal that reached another process stops this one too
            stop.append(signal.SIGTERM)
        if global_step >= total_steps or stopped:
            break
        # The step's augmentation is drawn for the whole batch, so that N processes see the images one would; dropout
        # draws go on from there in one process, and from a seed of their rank in each of N.
        torch.manual_seed(_seed(config.seed, state.epoch, state.step, 1))
        if config.augment != "none":  # crop and flip draw first: the presets before affine and erase compute as ever
            crop, flip = "crop" in config.augment, "flip" in config.augment
            if crop or flip:
                images = augment(images, pad if crop else 0, flip, torch.default_generator)
            if "affine" in config.augment:
                images = affine(images, torch.default_generator)
            if "erase" in config.augment:
                images = erase(images, normalize.mean_pixel, torch.default_generator)
        if group.active:
            mine = slice(group.rank * share, (group.rank + 1) * share)
            images, labels = images[mine], labels[mine]
            torch.manual_seed(_seed(config.seed, state.epoch, state.step, 1, 1 + group.rank))
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr_at(config, global_step, total_steps)
        x, y = normalize(images), labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp):
            outputs = model(x)
            loss = loss_fn(outputs.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if average is not None:
            average.update_parameters(getattr(model, "module", model))  # the module inside DDP
        loss_sum += loss.detach() * len(y)
        correct += (outputs.argmax(1) == y).sum()
        state.seen += len(y) * group.world
        state.step += 1
        if state.step % 20 == 0:
            flush()
        if on_step is not None:
            on_step(state, time.perf_counter() - start)
    flush()
    state.seconds += time.perf_counter() - start
    return stopped


@dataclass
class RunResult:
    """What ``train`` returns: the run directory and its headline numbers."""

    path: Path
    config: TrainConfig
    history: list[dict[str, Any]]
    test: Evaluation
    classes: tuple[str, ...]

    @property
    def test_accuracy(self) -> float:
        return self.test.accuracy

    def summary(self) -> dict[str, Any]:
        precision, recall = self.test.precision_recall()
        return {
            "run": str(self.path),
            "architecture": self.config.architecture,
            "dataset": self.config.dataset,
            "epochs": len(self.history),
            "test_accuracy": self.test.accuracy,
            "test_loss": self.test.loss,
            "best_val_accuracy": max((h["val_acc"] for h in self.history if h["val_acc"] is not None), default=None),
            "train_seconds": sum(h["seconds"] for h in self.history),
            "per_class": {
                c: {"precision": float(p), "recall": float(r)}
                for c, p, r in zip(self.classes, precision, recall, strict=True)
            },
            "history": self.history,
        }


PROGRESS_EVERY_S = 30.0
"""Without a bar (a pipe, a log file, a terminal of unknown size), a line at least this often within an epoch."""


class _Reporter:
    """Progress on stderr: a bar per epoch on a terminal, else a line per epoch and one every PROGRESS_EVERY_S."""

    def __init__(self, mode: Progress, epochs: int, steps: int, batch_size: int) -> None:
        self.mode, self.epochs, self.steps, self.batch_size = mode, epochs, steps, batch_size
        self.bar: Any = None
        self.said = time.monotonic()

    def start(self, state: EpochState) -> None:
        if self.mode == "bar":
            from tqdm import tqdm  # type: ignore[import-untyped]

            self.bar = tqdm(
                total=self.steps,
                initial=state.step,
                desc=f"epoch {state.epoch + 1}/{self.epochs}",
                unit="batch",
                file=sys.stderr,
                leave=True,
                dynamic_ncols=True,
            )

    def step(self, state: EpochState, seconds: float) -> None:
        # Every 20 steps the running sums are brought up to date: a line then reports the steps done so far.
        if self.mode == "lines" and state.step % 20 == 0 and time.monotonic() - self.said >= PROGRESS_EVERY_S:
            self.said = time.monotonic()
            print(
                f"epoch {state.epoch + 1}/{self.epochs}  step {state.step}/{self.steps}  train loss "
                f"{state.loss_sum / max(1, state.seen):.4f} acc {state.correct / max(1, state.seen):.2%}  "
                f"{state.seen / max(seconds + state.seconds, 1e-9):,.0f} img/s",
                file=sys.stderr,
                flush=True,
            )
        if self.bar is not None:
            self.bar.update(1)
            if state.step % 20 == 0 and state.seen:
                self.bar.set_postfix(
                    loss=f"{state.loss_sum / state.seen:.4f}",
                    acc=f"{state.correct / state.seen:.2%}",
                    img_s=f"{state.seen / max(seconds + state.seconds, 1e-9):,.0f}",
                    refresh=False,
                )

    def end(self, record: dict[str, Any]) -> None:
        self.said = time.monotonic()
        if self.bar is not None:
            self.bar.close()
        if self.mode != "none":
            val = (
                f"val loss {record['val_loss']:.4f} acc {record['val_acc']:.2%}  "
                if record["val_acc"] is not None
                else ""
            )
            print(
                f"epoch {record['epoch']}/{self.epochs}  train loss {record['train_loss']:.4f} "
                f"acc {record['train_acc']:.2%}  {val}{record['images_per_s']:,.0f} img/s  {record['seconds']:.1f} s",
                file=sys.stderr,
                flush=True,
            )


def train(
    architecture: str | None = None,
    dataset: str | None = None,
    *,
    recipe: str = "default",
    resume: str | Path | None = None,
    runs_dir: str | Path | None = None,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    progress: Progress = "lines",
    on_epoch: Callable[[dict[str, Any], nn.Module], None] | None = None,
    **overrides: Any,
) -> RunResult:
    """Train ``architecture`` on ``dataset`` (default: the one its recipe names), or continue the run ``resume``,
    and return its result.

    ``overrides`` are TrainConfig fields (``epochs=3``, ``lr=1e-3``, ...); unset ones come from the recipe.
    ``on_epoch(record, model)`` is called after each epoch with its metrics, e.g. to log them elsewhere.
    """
    registry = get_registry()
    group = distributed.current()
    if resume is None and out is not None and group.restarts and (Path(out) / runs.CONFIG).is_file():
        resume = out  # torchrun --max-restarts started the processes again: continue where they stopped
    if resume is not None:
        path = Path(resume)
        saved = runs.open_run(path)
        try:  # a run from before --threads existed ran on all the CPUs it had
            config = TrainConfig(**{"threads": available_cpus(), **saved["train"]})
        except (TypeError, SettingError) as exc:  # its settings name no option the user gave: the file is damaged
            raise ZooError(f"{path / runs.CONFIG} is damaged ({exc}); start the run again with `zoo train`") from exc
        arch = registry.architecture(config.architecture)
        ds = find_dataset(config.dataset, config.image_size, config.grayscale)
        data_root = resolve_data_dir(data_dir or saved.get("data_dir"))
    else:
        if architecture is None:
            raise ZooError("train needs an architecture (and a data set, unless its recipe names one), or resume=RUN")
        arch = registry.architecture(architecture)
        if dataset is None:
            chosen = arch.tutorial_recipe if recipe == "tutorial" else arch.default_recipe
            dataset = chosen.dataset if chosen else None
            if dataset is None:
                raise ZooError(f"{arch.name}'s recipe names no data set; name one: zoo train {arch.name} DATASET")
        ds = find_dataset(dataset, overrides.get("image_size"), overrides.get("grayscale"))
        config = resolve_config(arch, ds, recipe, **overrides)
        data_root = resolve_data_dir(data_dir)
    if config.batch_size % group.world:
        raise SettingError(
            "batch_size",
            f"{config.batch_size} does not split evenly over {group.world} processes; "
            f"give a multiple of {group.world} (it is the batch of all processes together)",
        )
    device = group.device(pick_device(config.device))
    with distributed.process_group(group, device), contextlib.ExitStack() as held:
        if resume is not None and group.main:
            runs.lock(path, held)  # one process trains a run at a time
        data = load_splits(ds, data_root, config.val_split, config.seed, config.limit)
        if len(data.train) == 0:
            raise ZooError(f"no training images left after --val-split {config.val_split}; lower it")

        torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)  # the initial weights depend on the seed alone
        try:
            model = arch.build(ds.shape, ds.num_classes)
        except ZooError as exc:
            if not ds.location or not isinstance(exc.__cause__, ValueError):  # a shape the builder cannot take
                raise
            raise ZooError(f"{exc}, or resize the folder's images: {_resized(arch.input_shape)}") from exc
        model = model.to(device).to(memory_format=torch.channels_last)
        resuming = resume is not None and (Path(resume) / runs.LAST).is_file()
        init_sha256 = _initialise(model, config.init, arch, ds) if config.init and not resuming else None
        optimizer = _make_optimizer(config, model, device)
        # The moving average of the weights (--ema), buffers too: it is what is validated, kept and tested.
        average = _moving_average(model, config.ema) if config.ema else None
        evaluated = average.module if average is not None else model
        steps_per_epoch = max(1, len(data.train) // config.batch_size)
        total_steps = min(config.epochs * steps_per_epoch, config.max_steps or sys.maxsize)
        if resume is None and group.main:
            for note in _length_notes(config, arch, ds, len(data.train), total_steps, _fitted(overrides)):
                print(f"zoo: {note}", file=sys.stderr, flush=True)
        normalize = Normalizer(ds.mean, ds.std, device, channels_last=True)
        history: list[dict[str, Any]] = []
        state = EpochState(epoch=0)

        if resume is not None and (path / runs.LAST).is_file():
            history, state = _resume(path / runs.LAST, model, optimizer, average)
            finished = state.epoch >= config.epochs or state.epoch * steps_per_epoch + state.step >= total_steps
            if finished and (path / runs.SUMMARY).is_file():  # without it, the test split is still to be scored
                raise RunComplete(
                    f"run {path} is complete ({len(history)} epochs); nothing to resume. "
                    f"Use it with `zoo eval {path}`, or start a new run with `zoo train`"
                )
            if group.main:  # metrics.jsonl follows the checkpoint: a kill between the writes left it an epoch short
                write_text(path / runs.METRICS, "".join(json.dumps(h) + "\n" for h in history))
        elif resume is not None:
            if group.main:
                print(f"zoo: run {path} has no checkpoint yet: starting it again in place", file=sys.stderr, flush=True)
        elif not group.main:
            path = group.broadcast(None)  # the directory rank 0 made
        else:
            path = runs.create(
                Path(runs_dir) if runs_dir else None, Path(out) if out else None, f"{arch.name}-{ds.name}", held
            )
            group.broadcast(path)
            write_json(
                path / runs.CONFIG,
                {
                    "train": dataclasses.asdict(config),
                    "data_dir": str(data_dir) if data_dir else None,
                    "zoo_version": __version__,
                    "torch_version": torch.__version__,
                    "python_version": sys.version.split()[0],
                    "device": str(device),
                    "machine": describe_machine(config.threads),
                    "init_sha256": init_sha256,
                },
            )

        # Every process holds the whole model; DistributedDataParallel averages the gradients over them each step.
        trained = torch.nn.parallel.DistributedDataParallel(model) if group.active else model

        def save_last() -> None:
            if not group.main:
                return
            resume = {"history": history, "progress": dataclasses.asdict(state)}
            card = new_card(arch, ds, config=dataclasses.asdict(config), epoch=len(history))
            checkpoint.save(path / runs.LAST, model.state_dict(), card, resume=resume, optimizer=optimizer.state_dict(),
                            average=average.state_dict() if average is not None else None)  # fmt: skip

        reporter = _Reporter(progress if group.main else "none", config.epochs, steps_per_epoch, config.batch_size)
        best = max((h["val_acc"] for h in history if h["val_acc"] is not None), default=-1.0)
        with _interrupts(f"continue from the last checkpoint with: zoo train --resume {path}") as stop:
            while state.epoch < config.epochs and state.epoch * steps_per_epoch + state.step < total_steps:
                reporter.start(state)
                try:
                    stopped = train_one_epoch(trained, data.train, normalize, optimizer, config, state, steps_per_epoch,
                                              total_steps, stop, reporter.step, group, average)  # fmt: skip
                except TrainingDiverged as exc:
                    kept = (f"{path / runs.LAST}, from epoch {len(history)}, is the last good checkpoint"
                            if history else "no checkpoint was written (it diverged in the first epoch)")  # fmt: skip
                    lower = f"Lower --lr (it was {config.lr:g}) and train again"
                    raise TrainingDiverged(f"{exc}; {kept}. {lower}") from None
                if stopped:
                    save_last()
                    raise TrainingInterrupted(
                        f"stopped by {signal.Signals(stop[0]).name} at epoch {state.epoch + 1}, step {state.step}; "
                        f"continue with: zoo train --resume {path}"
                    )
                val = score(evaluated, data.val, normalize) if len(data.val) else None
                record = {
                    "epoch": state.epoch + 1,
                    "train_loss": state.loss_sum / max(1, state.seen),
                    "train_acc": state.correct / max(1, state.seen),
                    "val_loss": val.loss if val else None,
                    "val_acc": val.accuracy if val else None,
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds": state.seconds,
                    "images_per_s": state.seen / max(state.seconds, 1e-9),
                }
                history.append(record)
                state = EpochState(epoch=state.epoch + 1)
                # Every process scores the same weights on the same images: all make the same choice.
                if val is None or val.accuracy > best:  # the test split never takes part in choosing
                    best = val.accuracy if val else best
                    card = new_card(arch, ds, config=dataclasses.asdict(config), epoch=len(history), metrics=record)
                    if group.main:
                        checkpoint.save(path / runs.BEST, evaluated.state_dict(), card)
                save_last()
                if group.main:
                    write_text(path / runs.METRICS, "".join(json.dumps(h) + "\n" for h in history))
                    reporter.end(record)
                    if on_epoch is not None:
                        on_epoch(record, evaluated)

        group.barrier()  # rank 0 has written the best checkpoint
        best_weights = checkpoint.load(path / runs.BEST)
        checkpoint.load_weights(model, best_weights.weights, path / runs.BEST)
        test = score(model, data.test, normalize)
        result = RunResult(path, config, history, test, ds.classes)
        if not group.main:
            return result
        write_text(path / "report.txt", report(test, ds.classes) + "\n")
        plots.curves(history, path / "curves.png")
        plots.confusion(test.confusion, ds.classes, path / "confusion.png")
        plots.misses(data.test.images, test.labels, test.predictions, ds.classes, path / "misses.png")
        write_json(path / runs.SUMMARY, result.summary())  # last: a run with a summary has all its files
        return result


def _length_notes(
    config: TrainConfig, arch: Architecture, ds: Dataset, images: int, steps: int, fitted: bool
) -> list[str]:
    """What to say before training about the run's length: a recipe ``fitted`` to a small data set, a run too
    short to learn, and fine-tuning, the better start for a small data set."""
    recipe = arch.tutorial_recipe if config.recipe == "tutorial" else arch.default_recipe
    notes = []
    if fitted and recipe and (config.batch_size, config.epochs) != (recipe.batch_size, recipe.epochs):
        notes.append(f"{images:,} training images: batch {config.batch_size} for {config.epochs} epochs ({steps:,} "
                     f"steps), the recipe's {recipe.batch_size} for {recipe.epochs} fitted to them")  # fmt: skip
    if steps < MIN_STEPS and not config.max_steps:
        notes.append(f"{steps:,} optimiser steps ({images:,} images at batch {config.batch_size} for "
                     f"{config.epochs} epochs) rarely train a network; train longer with --epochs")  # fmt: skip
    fits = [w for w in get_registry().weights_of(arch.name) if w.input_shape == ds.shape] if images < 5_000 else []
    start = sorted(fits, key=lambda w: w.classes != ds.classes)  # weights trained on the same classes first
    if start and not config.init:
        notes.append(f"a small data set trains best from published weights: add --init {start[0].name}")
    return notes


def _moving_average(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``model``'s parameters and buffers (batch-norm statistics), decay ``decay``."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    update = get_ema_multi_avg_fn(decay)  # type: ignore[no-untyped-call]
    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def _resume(
    source: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    average: torch.optim.swa_utils.AveragedModel | None = None,
) -> tuple[list[dict[str, Any]], EpochState]:
    """Load the weights, optimizer state, moving average, history and progress of a ``last`` checkpoint; damaged
    state is a ZooError."""
    last = checkpoint.load(source)
    checkpoint.load_weights(model, last.weights, source)
    try:
        if average is not None:
            if last.average is None:
                raise ValueError("it holds no moving average of the weights (--ema)")
            average.load_state_dict(last.average)
        if last.optimizer is not None:
            optimizer.load_state_dict(last.optimizer)
            _match_layouts(optimizer)
        if last.resume is None:
            raise ValueError("it holds no resume state")
        history, state = last.resume["history"], EpochState(**last.resume["progress"])
        if not isinstance(history, list) or not all(isinstance(h, dict) and "val_acc" in h for h in history):
            raise ValueError("history is not a list of epoch records")
        numbers = [state.epoch, state.step, state.correct, state.seen, state.loss_sum, state.seconds]
        if not all(isinstance(n, int | float) and not isinstance(n, bool) and 0 <= n < 2**62 for n in numbers):
            raise ValueError(f"progress {dataclasses.asdict(state)} is out of range")
        if state.epoch != len(history):
            raise ValueError(f"progress says epoch {state.epoch}, history has {len(history)}")
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ZooError(
            f"the resume state in {source} is damaged ({detail}); start the run again with `zoo train`"
        ) from exc
    return history, state


def _resized(shape: tuple[int, ...]) -> str:
    """The options that make a folder's images ``shape`` (C, H, W): ``--image-size`` makes them square."""
    return f"--image-size {max(shape[1:])} " + ("--grayscale" if shape[0] == 1 else "--color")


def _initialise(model: nn.Module, source: str, arch: Architecture, ds: Dataset) -> str:
    """Copy the weights ``source`` names into the new model; returns their file's sha256, for the run's record.

    With another class count than they were trained for, the classifier head (the tensors sized by the class
    count) keeps its fresh initialisation; every other tensor must fit as it is.
    """
    ref = resolve(source)
    path = ref.path
    saved = checkpoint.load(path)
    card = saved.card
    if card.architecture != arch.name:
        raise SettingError(
            "init",
            f"{source} holds {card.architecture} weights, not {arch.name}'s; "
            f"train {card.architecture}, or give weights of {arch.name}",
        )
    if card.input_shape != ds.shape:
        raise SettingError(
            "init",
            f"{source} was trained on {format_shape(card.input_shape)} images, {ds.name} "
            f"has {format_shape(ds.shape)}; fine-tune on a data set of the same image shape"
            + (f" (this folder's images resized: {_resized(card.input_shape)})" if ds.location else ""),
        )
    own = model.state_dict()
    head = sorted(k for k, v in saved.weights.items() if k in own and own[k].shape != v.shape)
    foreign = [k for k in head if card.num_classes == ds.num_classes or own[k].shape[0] != ds.num_classes]
    if own.keys() != saved.weights.keys() or foreign:
        detail = ", ".join(sorted(own.keys() ^ saved.weights.keys()) or foreign)[:200]
        raise SettingError(
            "init",
            f"{source}: its weights do not fit {arch.name} ({detail}); give weights that `zoo train {arch.name}` wrote",
        )
    model.load_state_dict({k: v for k, v in saved.weights.items() if k not in head}, strict=False)
    if head:
        print(
            f"zoo: starting from {source}, with a new classifier head for {ds.num_classes} classes ({', '.join(head)})",
            file=sys.stderr,
            flush=True,
        )
    return ref.sha256 or sha256(path)
