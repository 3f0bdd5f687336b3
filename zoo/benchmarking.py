"""Inference speed: a model in every runtime zoo can run it in, timed side by side against the machine's limits."""

from __future__ import annotations

import contextlib
import copy
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo import checkpoint, plots, runs
from zoo.card import ModelCard
from zoo.errors import SettingError, ZooError
from zoo.exporting import ExportError, check_batch_sizes, export
from zoo.loader import get_registry
from zoo.machine import available_cpus, clock_ghz, cpu, describe_machine, flops_per_cycle
from zoo.references import ModelRef, resolve
from zoo.registry import Shape
from zoo.runtimes import Run, load_runner, torch_runner
from zoo.summary import count_macs

__all__ = ["BenchResult", "Contender", "Limits", "Timing", "bench", "measure", "measure_limits"]

MAX_ROUNDS = 100
"""With at most 60 s per runtime, batch size and round, a benchmark still ends."""
EAGER = ("eager", "eager_cl", "eager_bf16")
"""PyTorch in inference mode: NCHW float32, channels-last float32, and channels-last under bfloat16 autocast."""
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}


@dataclass
class Contender:
    name: str
    precision: str
    """The arithmetic it runs in: float32, bfloat16 or int8; it picks the peak that bounds it."""
    run: Run


@dataclass
class Timing:
    """One contender at one batch size, over all rounds."""

    batch: int
    median_ms: float
    p90_ms: float
    images_per_s: float
    """The batch over the median call: the same statistic as ``median_ms``, so that the two columns agree."""
    peak_percent: float | None = None
    """Arithmetic done per second, as a share of the same-run matrix-multiply peak of its precision."""
    roofline_percent: float | None = None


@dataclass
class Limits:
    """Upper bounds on what the machine can do, measured in the same run: arithmetic per precision (GFLOP/s) and
    copy bandwidth. Each figure is the highest of its sources, so that no runtime can beat it."""

    gflops: dict[str, float] = field(default_factory=dict)
    bandwidth_gb_s: float = 0.0
    """The fastest copy measured, at sizes from what the caches hold to what only memory holds."""
    sources: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per precision, each figure the bound is the highest of: ``cpu`` (threads × the clock timed now × the most
    a core can do per cycle) and every matrix multiply measured (``torch``, ``onnxruntime``)."""
    clock_ghz: float | None = None

    def merged(self, other: Limits) -> Limits:
        """The higher of each figure: the machine's best, before or after the timings."""
        sources = {p: {k: max(v, other.sources.get(p, {}).get(k, 0.0)) for k, v in s.items()}
                   for p, s in self.sources.items()}  # fmt: skip
        return Limits({p: max(g, other.gflops.get(p, 0.0)) for p, g in self.gflops.items()},
                      max(self.bandwidth_gb_s, other.bandwidth_gb_s), sources,
                      max(self.clock_ghz or 0.0, other.clock_ghz or 0.0) or None)  # fmt: skip


@dataclass
class BenchResult:
    source: str
    machine: str
    threads: int
    macs_per_image: int | None
    bytes_per_image: dict[str, float]
    """Activations each layer reads and writes per image, at each precision's element size."""
    limits: Limits
    timings: dict[str, list[Timing]]
    precisions: dict[str, str]
    skipped: dict[str, str] = field(default_factory=dict)
    """Formats not timed, and why."""
    notes: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    """Figures above their limit: each is a limit that failed to bound, so the figure is not given."""

    def __post_init__(self) -> None:
        """Each timing's share of its precision's peak and of the roofline."""
        for name, timings in self.timings.items():
            peak, roof = self.limits.gflops.get(self.precisions[name]), self.roofline(name)
            for t in timings:
                if self.macs_per_image and peak:
                    t.peak_percent = self._share(name, t, "peak", t.images_per_s * 2 * self.macs_per_image / peak / 1e9)
                if roof:
                    t.roofline_percent = self._share(name, t, "roofline", t.images_per_s / roof)

    def _share(self, name: str, timing: Timing, limit: str, fraction: float) -> float | None:
        """``fraction`` of a limit as a percentage; above 100% the limit is at fault: recorded, and no figure."""
        if fraction <= 1:
            return 100 * fraction
        self.faults.append(f"{name} at batch {timing.batch} ran at {fraction:.0%} of its {self.precisions[name]} "
                           f"{limit}: that limit does not bound this machine, so no share of it is given")  # fmt: skip
        return None

    def roofline(self, name: str) -> float | None:
        """Images/s the machine allows this contender: the lower of its arithmetic and memory-traffic bounds."""
        precision = self.precisions[name]
        peak = self.limits.gflops.get(precision)
        if self.macs_per_image is None or peak is None or not self.bytes_per_image:
            return None
        compute = peak * 1e9 / (2 * self.macs_per_image)
        memory = self.limits.bandwidth_gb_s * 1e9 / self.bytes_per_image[precision]
        return min(compute, memory)

    def plot(self, path: Path) -> None:
        """Images/s per runtime at each batch size, with each runtime's roofline, drawn into the PNG ``path``."""
        label = {n: f"{n} ({self.precisions[n]})" for n in self.timings}
        plots.speeds(
            {label[n]: [(t.batch, t.images_per_s) for t in ts] for n, ts in self.timings.items()},
            {label[n]: self.roofline(n) for n in self.timings},
            f"{self.source}: {self.machine}",
            path,
        )

    def fastest(self, batch: int, precision: str | None = None) -> str:
        """The runtime with the most images/s at ``batch`` (among those of ``precision``, if given)."""
        names = [n for n in self.timings if precision in (None, self.precisions[n])] or list(self.timings)
        return max(names, key=lambda n: next(t.images_per_s for t in self.timings[n] if t.batch == batch))

    def table(self) -> str:
        """Per runtime and batch size: the median call in ms (its p90) and the images per second at that median
        call; at the largest batch size, the share of the same-run matrix-multiply peak and of the model's roofline
        that this is."""
        batches = [t.batch for t in next(iter(self.timings.values()))]
        width = max(12, *map(len, self.timings))
        head = f"{'runtime':<{width}} {'precision':<9}" + "".join(
            f" {f'batch {b}: median ms (p90)':>27} {'img/s':>9}" for b in batches
        )
        lines = [f"{self.source} on {self.machine}", self._limits_line(), f"{head} {'% peak':>6} {'% roofline':>10}"]
        for name, timings in self.timings.items():
            row = f"{name:<{width}} {self.precisions[name]:<9}"
            for t in timings:
                row += f" {f'{t.median_ms:.3f} ({t.p90_ms:.3f})':>27} {t.images_per_s:9,.0f}"
            last = timings[-1]
            lines.append(f"{row} {_percent(last.peak_percent):>6} {_percent(last.roofline_percent):>10}")
        lines += [f"{name:<{width}} not timed: {why}" for name, why in self.skipped.items()]
        lines += [f"limit fault: {fault}" for fault in self.faults]
        lines.append("img/s: the batch size over the median call, the statistic of the ms column")
        for b in batches:
            best, exact = self.fastest(b), self.fastest(b, "float32")
            also = f"; in float32: {exact}" if exact != best else ""
            lines.append(f"fastest at batch {b}: {best} ({self.precisions[best]}){also}")
        return "\n".join(lines)

    def _limits_line(self) -> str:
        def peak(precision: str, gflops: float) -> str:
            sources = self.limits.sources.get(precision, {})
            shown = ", ".join(f"{k} {v:,.0f}" for k, v in sources.items())
            return f"{precision} {gflops:,.0f} GFLOP/s ({shown})"

        clock = f"clock {self.limits.clock_ghz:.2f} GHz; " if self.limits.clock_ghz else "clock unknown; "
        peaks = "; ".join(peak(p, g) for p, g in self.limits.gflops.items())
        work = f"{self.macs_per_image:,} MACs per image" if self.macs_per_image else "MACs unknown"
        return f"same-run limits: {clock}{peaks}; copy {self.limits.bandwidth_gb_s:,.1f} GB/s; {work}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["fastest"] = {str(t.batch): self.fastest(t.batch) for t in next(iter(self.timings.values()))}
        return data


def _percent(value: float | None) -> str:
    return f"{value:5.0f}%" if value is not None else f"{'-':>6}"


def _time(run: Callable[[Any], Any], x: Any, seconds: float) -> list[float]:
    """Seconds per call, calling ``run(x)`` for about ``seconds`` (at least once)."""
    calls: list[float] = []
    end = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        run(x)
        stop = time.perf_counter()
        calls.append(stop - start)
        if stop >= end:
            return calls


def measure_limits(precisions: Sequence[str], threads: int = 1, size: int = 1024) -> Limits:
    """Per precision, an upper bound on the arithmetic ``threads`` threads can do: the CPU's own (threads × the
    clock timed now × the most a core's vector units do per cycle), or a matrix multiply measured faster than that
    (torch's, and onnxruntime's for float32), best of three; and the fastest copy bandwidth at 1, 16 and 256 MiB."""
    limits = Limits(clock_ghz=clock_ghz())
    features = cpu()[1]
    for precision in precisions:
        sources = limits.sources.setdefault(precision, {})
        if limits.clock_ghz is not None:
            sources["cpu"] = threads * limits.clock_ghz * flops_per_cycle(precision, features)
        if precision == "int8":
            a = torch.randint(-128, 128, (size, size), dtype=torch.int8)
            multiply: Callable[[Any], Any] = lambda a: torch._int_mm(a, a)  # noqa: E731
        else:
            a = torch.randn(size, size).to(getattr(torch, precision))
            multiply = lambda a: a @ a  # noqa: E731
        with contextlib.suppress(RuntimeError):  # this build has no such kernel on this CPU
            multiply(a)
            sources["torch"] = 2 * size**3 / min(min(_time(multiply, a, 0.05)) for _ in range(3)) / 1e9
        if precision == "float32":
            ort_multiply, x = _onnxruntime_matmul(size, threads)
            sources["onnxruntime"] = 2 * size**3 / min(min(_time(ort_multiply, x, 0.05)) for _ in range(3)) / 1e9
        if sources:
            limits.gflops[precision] = max(sources.values())
    for mib in (1, 16, 256):  # half in each of two tensors: the largest is far beyond any cache
        src, dst = torch.ones(mib << 17), torch.ones(mib << 17)
        best = min(min(_time(dst.copy_, src, 0.05)) for _ in range(3))
        limits.bandwidth_gb_s = max(limits.bandwidth_gb_s, 2 * src.numel() * 4 / best / 1e9)  # read and written
    return limits


def _onnxruntime_matmul(size: int, threads: int) -> tuple[Callable[[Any], Any], np.ndarray]:
    """A float32 ``size``×``size`` matrix product as onnxruntime runs it, and its input."""
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    b = numpy_helper.from_array(np.ones((size, size), dtype=np.float32), "b")
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size])],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])], [b])  # fmt: skip
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(), options,
        providers=["CPUExecutionProvider"],
    )  # fmt: skip
    x = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    session.run(None, {"a": x})
    return lambda x: session.run(None, {"a": x}), x


def measure(
    contenders: Sequence[Contender], shape: Sequence[int], batch_sizes: Sequence[int], rounds: int, seconds: float
) -> dict[str, list[Timing]]:
    """Every contender at every batch size, ``rounds`` times in turn, so that drift in the machine's speed
    (other work, clock changes) hits all alike; a contender's figures are medians over all its calls."""
    inputs = {b: np.random.default_rng(0).standard_normal((b, *shape), dtype=np.float32) for b in batch_sizes}
    calls: dict[tuple[str, int], list[list[float]]] = {(c.name, b): [] for c in contenders for b in batch_sizes}
    for c in contenders:
        for x in inputs.values():
            c.run(x)  # the first call pays for allocation and kernel selection
    for _ in range(rounds):
        for b, x in inputs.items():
            for c in contenders:
                calls[c.name, b].append(_time(c.run, x, seconds))
    timings: dict[str, list[Timing]] = {}
    for c in contenders:
        for b in batch_sizes:
            pooled = sorted(t for r in calls[c.name, b] for t in r)
            median, p90 = statistics.median(pooled), pooled[min(len(pooled) - 1, int(0.9 * len(pooled)))]
            timing = Timing(b, 1e3 * median, 1e3 * p90, b / median)
            timings.setdefault(c.name, []).append(timing)
    return timings


def _traffic(model: nn.Module, shape: Shape) -> tuple[int, int]:
    """(multiply-accumulates, tensor elements each layer reads and writes) per image, from one forward pass.

    Activations only: at the batch sizes where bandwidth matters, the weights are read once per batch.
    """
    elements = [0]

    def count(module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
        elements[0] += sum(a.numel() for a in args if isinstance(a, torch.Tensor)) + out.numel()

    handles = [m.register_forward_hook(count) for m in model.modules() if not any(m.children())]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, *shape))
    finally:
        for h in handles:
            h.remove()
    return count_macs(model, shape), elements[0]


def _eager(model: nn.Module, name: str) -> Contender:
    if name == "eager":
        return Contender(name, "float32", torch_runner(model))
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    bf16 = name == "eager_bf16"

    def run(x: np.ndarray) -> np.ndarray:  # the conversion to channels-last is part of what a caller pays
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return cl(torch.from_numpy(x).contiguous(memory_format=torch.channels_last)).float().numpy()  # type: ignore[no-any-return]

    return Contender(name, "bfloat16" if bf16 else "float32", run)


QUANTIZED = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


def _precision(path: Path) -> str:
    """The arithmetic a file runs in: int8 for an ONNX graph with quantized operators, else float32 (onnx_fp16
    stores float16 weights but computes in float32)."""
    if path.suffix != ".onnx":
        return "float32"
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return "int8" if any(node.op_type in QUANTIZED for node in graph.node) else "float32"


def _counting_model(card: ModelCard, notes: list[str]) -> nn.Module | None:
    """An exported file's architecture at the shape the file declares, on the meta device (shapes only: nothing
    allocated, whatever the file says), to count its MACs and tensor traffic; None when it cannot be built."""
    arch = get_registry().architectures.get(card.architecture)
    try:
        if arch is None:
            raise ZooError(f"architecture {card.architecture} is not installed")
        with torch.device("meta"):
            return arch.build(card.input_shape, card.num_classes).eval()  # counted as it runs: in eval mode
    except ZooError as exc:
        notes.append(f"no roofline: the file's MACs could not be counted ({exc})")
        return None


def bench(
    target: str | Path | ModelRef,
    formats: Sequence[str] | str | None = None,
    *,
    batch_sizes: Sequence[int] = (1, 256),
    rounds: int = 5,
    seconds: float = 0.25,
    data_dir: str | Path | None = None,
    trust: bool = False,
    runtimes: Sequence[str] = (),
) -> BenchResult:
    """Time ``target`` (an architecture, ``ARCH:TAG``, a run, or an exported file) in each runtime.

    For anything but an exported file, the model is exported into a temporary folder in every format (proved, as
    `zoo export` proves them; approximate formats need the data set's test images under ``data_dir``) and each
    file is timed with its own runtime, beside PyTorch eager.  An exported file is timed alone; one whose format
    can run code needs ``trust=True``.

    ``runtimes`` (``"NAME[:PRECISION]"``, as ``zoo list`` shows them) also times each file of a format the runtime
    runs in it, once proved against the file's own runtime (``zoo.runtimes.load_runner``); one that fails its proof
    is not timed, and says why.
    """
    check_batch_sizes(batch_sizes)
    if not 1 <= rounds <= MAX_ROUNDS:
        raise SettingError("rounds", f"must be from 1 to {MAX_ROUNDS}, got {rounds}")
    if not 0 < seconds <= 60:  # false for nan too
        raise SettingError("seconds", f"must be more than 0 and at most 60, got {seconds}")
    batch_sizes = list(dict.fromkeys(batch_sizes))
    registry = get_registry()
    if isinstance(formats, str):  # one runtime named on its own
        formats = [formats]
    wanted = list(dict.fromkeys(_runtime(f) for f in formats)) if formats else None
    others = [(spec, registry.runtime(spec.partition(":")[0])) for spec in runtimes]  # named before any export
    threads = available_cpus()
    torch.set_num_threads(threads)
    contenders: list[Contender] = []
    skipped: dict[str, str] = {}
    notes: list[str] = []
    untrained = _untrained(target)
    ref = None if untrained else resolve(target)
    model_name: str | ModelRef = ref or str(target)
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as tmp:
        if ref is not None and ref.exporter is not None:
            source = ref.path
            if wanted:
                raise SettingError("formats", f"chooses the runtimes an architecture or run is exported to; "
                                              f"{source} is timed in its own format")  # fmt: skip
            run, card = load_runner(ref, trust)
            check_batch_sizes(batch_sizes, card.input_shape)
            name = ref.exporter.name
            contenders.append(Contender(name, _precision(source), run))
            model = _counting_model(card, notes)
            written = {name: source}
        else:
            exported = (n for n, e in registry.exporters.items() if n != "safetensors" and not e.trains)  # as --all
            names = wanted or [*EAGER, *exported]
            files = [n for n in names if n not in EAGER]
            exact = [n for n in files if registry.exporter(n).proof != "approximate"]
            # the safetensors file gives the eager contenders their model, with the weights the others hold
            result = export(model_name, ["safetensors", *exact], out=tmp, untrained=untrained, data_dir=data_dir)
            format_notices = {e.notice for e in registry.exporters.values()}
            notes += [n for n in result.notices if n not in format_notices]  # what zoo export says of the model
            if untrained:
                notes.append(f"{target} has no runs and no published weights: timed with fresh ones")
            if approximate := [n for n in files if n not in exact]:  # one call: the test split is read once
                try:
                    judged = export(model_name, approximate, out=tmp, untrained=untrained, data_dir=data_dir)
                except ExportError as exc:  # those that were proved are timed, the others say why not
                    if exc.result is None:
                        raise
                    judged = exc.result
                result.files.update(judged.files)
                skipped.update(judged.failures)
            saved = checkpoint.load(result.files["safetensors"])  # written and proved just now
            model, card = checkpoint.build(saved, result.files["safetensors"]), saved.card
            for name in names:
                if name in EAGER:
                    contenders.append(_eager(model, name))
                elif name in result.files:
                    run, _ = registry.exporter(name).load(result.files[name])  # written and proved just now
                    contenders.append(Contender(name, _precision(result.files[name]), run))
            check_batch_sizes(batch_sizes, card.input_shape)
            written = result.files
        for spec, runtime in others:  # each file a runtime runs, in it, proved first
            asked = spec.partition(":")[2]
            for fmt, path in written.items():
                int8 = registry.exporter(fmt).precision == "int8"
                if fmt in runtime.formats and not (int8 and asked not in ("", "int8")):  # an int8 file computes in int8
                    label = f"{fmt}/{runtime.name}{spec[spec.find(':') :] if ':' in spec else ''}"
                    try:
                        proved = load_runner(path, trust, runtime=spec, data_dir=data_dir)[0]
                    except ZooError as exc:
                        skipped[label] = str(exc)
                        continue
                    contenders.append(Contender(label, getattr(proved, "precision", "float32"), proved))
        if not contenders:
            raise ZooError(f"nothing to time: {'; '.join(f'{k}: {v}' for k, v in skipped.items())}")
        precisions = {c.name: c.precision for c in contenders}
        kinds = sorted(set(precisions.values()), key=list(BYTES).index)
        before = measure_limits(kinds, threads)
        timings = measure(contenders, card.input_shape, batch_sizes, rounds, seconds)
        limits = before.merged(measure_limits(kinds, threads))  # the machine's best: a slow moment does not flatter
    macs, elements = (None, 0)
    if model is not None:
        with torch.device(next(model.parameters(), torch.empty(0)).device):  # meta for a file's model: no memory
            macs, elements = _traffic(model, card.input_shape)
    out = BenchResult(
        str(target),
        describe_machine(threads),
        threads,
        macs,
        {p: elements * size for p, size in BYTES.items()} if elements else {},
        limits,
        timings,
        precisions,
        skipped,
        notes,
    )
    return out


def _runtime(name: str) -> str:
    """A runtime's name: an eager one, or a registered export format other than safetensors (aliases resolved)."""
    registry = get_registry()
    if name.lower() in EAGER:
        return name.lower()
    try:
        found = registry.exporter(name).name
    except ZooError:
        found = None
    if found in (None, "safetensors"):  # safetensors holds weights: eager runs them
        known = ", ".join([*EAGER, *(e for e in registry.exporters if e != "safetensors")])
        raise SettingError("formats", f"has no runtime named {name!r}; choose from {known}")
    return str(found)


def _untrained(target: str | Path | ModelRef) -> bool:
    """Time fresh weights when ``target`` names an architecture (or alias) with neither runs nor published weights:
    speed does not depend on them."""
    if isinstance(target, ModelRef) or Path(target).exists():
        return False
    try:
        arch = get_registry().architecture(str(target)).name
    except ZooError:
        return False  # a run, a file or ARCH:TAG
    return runs.newest(Path(runs.DEFAULT_RUNS_DIR), arch) is None and not get_registry().weights_of(arch)
