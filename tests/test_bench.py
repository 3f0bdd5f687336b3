"""`zoo bench`: every runtime timed side by side, in alternating rounds, against the same run's machine limits."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner, Result
from conftest import FakeDist
from onnx import TensorProto, helper
from zoo.exporters.formats import _save_onnx

from zoo import machine
from zoo.benchmarking import EAGER, BenchResult, Contender, Limits, Timing, measure, measure_limits
from zoo.card import decode
from zoo.cli import cli


def zoo(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "run"
    args = ["train", "cnn6", "sevenseg", "--epochs", "1", "--limit", "256", "--batch-size", "64", "--quiet"]
    result = zoo(*args, "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def test_rounds_alternate_and_the_fastest_is_named() -> None:
    calls: list[str] = []

    def runner(name: str, pause: float):  # type: ignore[no-untyped-def]
        def run(x: np.ndarray) -> np.ndarray:
            calls.append(name)
            time.sleep(pause * len(x))
            return x

        return run

    contenders = [Contender("slow", "float32", runner("slow", 0.004)), Contender("fast", "float32", runner("fast", 0))]
    timings = measure(contenders, (1, 2, 2), batch_sizes=(1, 4), rounds=3, seconds=0.01)
    # after one warm-up call each per batch size, blocks of calls alternate: 3 rounds x 2 batch sizes x 2 contenders
    assert calls[:4] == ["slow", "slow", "fast", "fast"]
    blocks = [name for i, name in enumerate(calls[4:], 4) if name != calls[i - 1]]
    assert blocks == ["slow", "fast"] * 6
    slow = timings["slow"]
    assert [t.batch for t in slow] == [1, 4]
    assert slow[0].median_ms >= 4 and slow[1].median_ms >= 16 and slow[0].p90_ms >= slow[0].median_ms
    assert 180 <= slow[1].images_per_s <= 250  # 4 images per 16 ms, plus overhead
    result = BenchResult("x", "m", 1, None, {}, Limits(), timings, {"slow": "float32", "fast": "float32"})
    assert result.fastest(1) == result.fastest(4) == "fast"


def test_the_roofline_is_the_lower_of_the_arithmetic_and_the_memory_bound() -> None:
    limits = Limits({"float32": 100.0, "int8": 400.0}, bandwidth_gb_s=10.0)
    timings = {"a": [Timing(256, 1, 1, 1)], "b": [Timing(256, 1, 1, 1)]}
    per_image = {"float32": 400_000, "int8": 100_000}
    result = BenchResult("x", "m", 1, 1_000_000, per_image, limits, timings, {"a": "float32", "b": "int8"})
    assert result.roofline("a") == pytest.approx(25_000)  # 10 GB/s / 400 kB: memory-bound
    assert result.roofline("b") == pytest.approx(100_000)  # 10 GB/s / 100 kB = 400 GFLOP/s / 2 MFLOP


def test_a_figure_above_its_limit_is_a_fault_of_the_limit_not_a_figure() -> None:
    limits = Limits({"float32": 100.0}, bandwidth_gb_s=1000.0, sources={"float32": {"torch": 100.0}})
    timings = {"fast": [Timing(256, 1, 1, 60_000)], "fair": [Timing(256, 1, 1, 40_000)]}
    precisions = {"fast": "float32", "fair": "float32"}
    result = BenchResult("x", "m", 1, 1_000_000, {"float32": 4}, limits, timings, precisions)
    # 2 MFLOP per image against 100 GFLOP/s: 60,000 images/s would be 120% of the peak, 40,000 are 80%
    assert timings["fast"][0].peak_percent is None and timings["fair"][0].peak_percent == pytest.approx(80)
    said = "that limit does not bound this machine, so no share of it is given"
    assert result.faults == [
        f"fast at batch 256 ran at 120% of its float32 {limit}: {said}" for limit in ("peak", "roofline")
    ]
    table = result.table()
    assert "limit fault: fast at batch 256" in table and "120%" not in table.split("limit fault")[0]


@pytest.mark.skipif(machine.clock_ghz() is None, reason="the clock is timed on x86-64 Linux only")
def test_the_cpu_bound_is_threads_times_clock_times_vector_work() -> None:
    """The clock is timed, not read (/proc/cpuinfo gives the base clock, which turbo passes), and each precision's
    bound counts two fused multiply-add units of the widest vectors, or the matrix units."""
    assert 0.5 < (machine.clock_ghz() or 0) < 7
    assert machine.flops_per_cycle("float32", ("avx2", "fma")) == 32
    assert machine.flops_per_cycle("float32", ("avx2", "fma", "avx512f")) == 64
    assert machine.flops_per_cycle("bfloat16", ("avx512f", "avx512_bf16")) == 128
    assert machine.flops_per_cycle("bfloat16", ("avx512f", "amx_bf16")) == 2048
    assert machine.flops_per_cycle("int8", ("avx512f", "avx512_vnni")) == 256
    limits = measure_limits(["float32"], threads=1)
    assert limits.sources["float32"]["cpu"] == pytest.approx(
        limits.clock_ghz * machine.flops_per_cycle("float32", machine.cpu()[1])  # type: ignore[operator]
    )
    assert limits.gflops["float32"] == max(limits.sources["float32"].values())


def test_bench_times_every_runtime_and_draws_them(run: Path, tmp_path: Path) -> None:
    runtimes = [*EAGER, "torchscript", "pt2", "onnx", "fp16"]
    plot = tmp_path / "speeds.png"
    result = zoo("bench", str(run), "--formats", ",".join(runtimes), "--batch-sizes", "1,8", "--rounds", "2",
                 "--seconds", "0.01", "--json", "--plot", str(plot))  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data["timings"]) == [*EAGER, "torchscript", "pt2", "onnx", "onnx_fp16"]
    for name, timings in data["timings"].items():
        assert [t["batch"] for t in timings] == [1, 8]
        assert all(t["images_per_s"] > 0 and 0 < t["median_ms"] <= t["p90_ms"] for t in timings), name
        for t in timings:  # one statistic for both columns: 2.54 ms at batch 256 stood beside 36,676 img/s
            assert t["images_per_s"] == pytest.approx(t["batch"] * 1000 / t["median_ms"]), name
        assert all(t["roofline_percent"] > 0 and t["peak_percent"] > 0 for t in timings), name
    assert data["precisions"]["eager_bf16"] == "bfloat16" and data["precisions"]["onnx"] == "float32"
    assert data["limits"]["gflops"]["float32"] > 0 and data["limits"]["bandwidth_gb_s"] > 0
    assert data["macs_per_image"] == 199_968  # mnist_cnn6_16's, as `zoo info` gives it
    best = max(data["timings"], key=lambda n: data["timings"][n][1]["images_per_s"])
    assert data["fastest"]["8"] == best
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_table_names_the_machine_its_limits_and_the_fastest(run: Path) -> None:
    result = zoo("bench", str(run), "--formats", "eager,onnx", "--batch-sizes", "1,4", "--rounds", "1",
                 "--seconds", "0.01")  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "threads" in lines[0] and "same-run limits: " in lines[1] and "float32 " in lines[1]
    assert "torch " in lines[1] and "onnxruntime " in lines[1], "the float32 bound names each figure it is the max of"
    assert [line.split()[0] for line in lines[3:5]] == ["eager", "onnx"]
    assert lines[-1].startswith("fastest at batch 4: ") and "(float32)" in lines[-1]


def test_an_exported_file_is_timed_alone_and_code_needs_trust(run: Path, tmp_path: Path) -> None:
    assert zoo("export", str(run), "--onnx", "--pt2", "--out", str(tmp_path)).exit_code == 0
    onnx_file, pt2_file = tmp_path / "mnist_cnn6_16.onnx", tmp_path / "mnist_cnn6_16.pt2"
    result = zoo("bench", str(onnx_file), "--batch-sizes", "2", "--rounds", "1", "--seconds", "0.01", "--json")
    assert result.exit_code == 0, result.output
    assert list(json.loads(result.stdout)["timings"]) == ["onnx"]
    refused = zoo("bench", str(pt2_file), "--rounds", "1", "--seconds", "0.01")
    assert refused.exit_code == 1 and "--trust" in refused.stderr and "Traceback" not in refused.output


def test_an_exported_file_with_batch_norms_is_counted_in_eval_mode(tmp_path: Path) -> None:
    """lenet_bn's batch norm after a linear layer cannot run on one image in training mode: MACs are counted in
    eval mode, so the benchmark ends with its figures."""
    assert zoo("export", "lenet_bn:mnist", "--onnx", "--out", str(tmp_path)).exit_code == 0
    result = zoo("bench", str(tmp_path / "lenet_bn-mnist.onnx"), "--batch-sizes", "1", "--rounds", "1",
                 "--seconds", "0.01", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["macs_per_image"] > 0


def test_a_files_declared_shape_allocates_nothing_until_a_bounded_batch(run: Path, tmp_path: Path) -> None:
    """A small graph whose metadata declares 1x2048x2048 images: counting the architecture's MACs at that shape
    happens on the meta device, and a batch whose input alone passes 2 GiB is refused before anything runs."""
    assert zoo("export", str(run), "--onnx", "--out", str(tmp_path)).exit_code == 0
    meta = decode({p.key: p.value for p in onnx.load(str(tmp_path / "mnist_cnn6_16.onnx")).metadata_props}, "")
    meta["input_shape"] = [1, 2048, 2048]
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, len(meta["classes"])], [0.1] * len(meta["classes"]))
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["p"]), helper.make_node("Flatten", ["p"], ["f"])]
    graph = helper.make_graph(
        [*nodes, helper.make_node("MatMul", ["f", "w"], ["scores"])],
        "big",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 1, 2048, 2048])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", len(meta["classes"])])],
        [weight],
    )
    crafted = tmp_path / "big.onnx"
    _save_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), meta, crafted)
    refused = zoo("bench", str(crafted), "--rounds", "1", "--seconds", "0.01")
    assert refused.exit_code == 1
    assert "256 images of 1x2048x2048 take 4.0 GiB before the model runs (at most 2 GiB)" in refused.stderr
    result = zoo("bench", str(crafted), "--batch-sizes", "1", "--rounds", "1", "--seconds", "0.01", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data["timings"]) == ["onnx"] and data["precisions"] == {"onnx": "float32"}
    assert data["macs_per_image"] > 100 * 199_968  # counted at the declared shape, on the meta device


def test_bad_settings_are_refused_before_anything_runs(run: Path, tmp_path: Path) -> None:
    for args, error in [
        (["--seconds", "inf"], "'--seconds': inf is not in the range 0<x<=60"),
        (["--batch-sizes", "100000000"], "--batch-sizes must be integers from 1 to 65,536"),
        (["--formats", "safetensors"], "--formats has no runtime named 'safetensors'; choose from eager,"),
        (["--plot", str(tmp_path / "no" / "x.png")], f"is in {tmp_path / 'no'}, which is no folder"),
        (["--plot", str(tmp_path / "x.jpg")], "x.jpg is not a .png file; name a PNG file in an existing folder"),
    ]:
        result = zoo("bench", str(run), *args)
        assert result.exit_code != 0 and error in result.stderr, (args, result.stderr)
    missing = zoo("bench", str(tmp_path / "model.onnx"))
    assert missing.exit_code == 1 and "model.onnx does not exist; give an architecture" in missing.stderr
    assert not list(tmp_path.iterdir())


def test_a_file_is_timed_in_its_own_format_only(run: Path, tmp_path: Path) -> None:
    assert zoo("export", str(run), "--onnx", "--out", str(tmp_path)).exit_code == 0
    result = zoo("bench", str(tmp_path / "mnist_cnn6_16.onnx"), "--formats", "eager")
    assert result.exit_code == 1 and "is timed in its own format" in result.stderr


FLAT = """
from torch import nn
import zoo


def build(input_shape, num_classes):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))


@zoo.hookimpl
def register_architectures(register):
    register(zoo.Architecture(name="flat", builder=build, summary="one linear layer"))
"""


def test_a_plugins_architecture_without_weights_is_timed_with_fresh_ones(
    fake_dist: FakeDist, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dist("zoo-flat", FLAT)
    monkeypatch.chdir(tmp_path)
    result = zoo("bench", "flat", "--formats", "eager,onnx", "--batch-sizes", "1", "--rounds", "1", "--seconds",
                 "0.01", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "flat has no runs and no published weights: timed with fresh ones" in result.stderr
    data = json.loads(result.stdout)
    assert list(data["timings"]) == ["eager", "onnx"] and data["macs_per_image"] == 28 * 28 * 10


def test_a_format_that_cannot_be_proved_is_not_timed_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no runs here: the published weights
    (tmp_path / "empty").mkdir()
    result = zoo("bench", "cnn6", "--formats", "onnx,int8", "--data-dir", "empty", "--batch-sizes", "1",
                 "--rounds", "1", "--seconds", "0.01")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "onnx_int8    not timed: onnx_int8 is approximate" in result.stdout
    assert "published weights mnist_cnn6_16:mnist" in result.stderr


def test_an_unknown_runtime_lists_the_known_ones(run: Path) -> None:
    result = zoo("bench", str(run), "--formats", "eager,tensorrt")
    assert result.exit_code == 1
    assert "--formats has no runtime named 'tensorrt'; choose from eager, eager_cl, eager_bf16, torchscript" in (
        result.stderr
    )


def test_runtimes_named_twice_are_timed_once(run: Path) -> None:
    result = zoo("bench", str(run), "--formats", "eager,EAGER,onnx,onnx", "--batch-sizes", "1,1", "--rounds", "1",
                 "--seconds", "0.01", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    timings = json.loads(result.stdout)["timings"]
    assert list(timings) == ["eager", "onnx"] and all(len(t) == 1 for t in timings.values())
