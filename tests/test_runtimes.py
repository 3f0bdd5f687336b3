"""Runtimes as plugins: every registered runtime runs the files of its formats, proved against each file's own
runtime before it is trusted; one that computes something else is refused, saying why."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FakeDist
from PIL import Image

import zoo
from zoo import testing
from zoo.cli import cli
from zoo.errors import ZooError
from zoo.loader import get_registry
from zoo.runtimes import ProvedRun, load_runner

FILES = {"safetensors": ".safetensors", "onnx": ".onnx", "onnx_fp16": ".fp16.onnx", "onnx_int8": ".int8.onnx",
         "torchscript": ".torchscript.pt", "pt2": ".pt2"}  # fmt: skip
PAIRS = [(r.name, fmt) for r in get_registry().runtimes.values() for fmt in r.formats if fmt in FILES]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """mnist_cnn6_16 trained briefly on sevenseg (generated: its test split is always at hand), in every format."""
    root = tmp_path_factory.mktemp("runtimes")
    run = zoo.train("cnn6", "sevenseg", max_steps=300, out=root / "run", progress="off")
    out = root / "exports"
    files = zoo.export(run.path, list(FILES), out=out).files
    return {fmt: Path(files[fmt]) for fmt in FILES}


def test_the_built_in_runtimes_are_listed_and_openvino_only_where_it_imports() -> None:
    result = CliRunner().invoke(cli, ["list", "--json"])
    listed = {r["name"]: r for r in json.loads(result.stdout)["runtimes"]}
    expected = {"onnxruntime", "torch", "torch_script"} | (
        {"openvino"} if importlib.util.find_spec("openvino") else set()
    )
    assert set(listed) == expected
    assert listed["torch"]["precisions"] == ["float32", "bfloat16"] and listed["onnxruntime"]["formats"][0] == "onnx"
    info = CliRunner().invoke(cli, ["info", "ort"])
    assert info.exit_code == 0 and info.stdout.startswith("onnxruntime: ") and "runs: onnx, onnx_fp16" in info.stdout


@pytest.mark.parametrize(("runtime", "fmt"), PAIRS, ids=[f"{r}-{f}" for r, f in PAIRS])
def test_every_runtime_runs_its_formats_as_their_own_runtime_does(
    runtime: str, fmt: str, exported: dict[str, Path]
) -> None:
    own, card = load_runner(exported[fmt], trust=True)
    run, _ = load_runner(exported[fmt], trust=True, runtime=runtime)
    assert isinstance(run, ProvedRun) and run.runtime == runtime
    x = np.random.default_rng(1).standard_normal((8, *card.input_shape), dtype=np.float32)
    if fmt == "onnx_int8":
        assert run.precision == "int8" and "of 2,000 test images" in run.proof  # sevenseg's whole test split
        assert (run(x).argmax(1) == own(x).argmax(1)).mean() >= 0.75
    else:
        assert run.precision == "float32" and run.proof.startswith("within ")
        assert np.allclose(run(x), own(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("runtime", sorted(r.name for r in get_registry().runtimes.values() if len(r.precisions) > 1))
def test_every_lower_precision_is_proved_on_the_test_split_or_refused_with_the_reason(
    runtime: str, exported: dict[str, Path]
) -> None:
    """OpenVINO's bfloat16 on a CPU without it silently computed float32; asking for it is refused, saying so."""
    chosen = get_registry().runtime(runtime)
    fmt = next(f for f in chosen.formats if f in FILES and "int8" not in f)
    for precision in chosen.precisions[1:]:
        try:
            run, _ = load_runner(exported[fmt], runtime=f"{runtime}:{precision}")
        except ZooError as exc:
            assert precision in str(exc) and ("this CPU" in str(exc) or "not equivalent" in str(exc)), exc
            continue
        assert isinstance(run, ProvedRun) and run.precision == precision
        assert "test images" in run.proof and "top class as the file's own runtime on" in run.proof


NOISY = """
import numpy as np
import zoo
from zoo.exporters import formats


def load_noisy(path, precision, threads):  # off by a thousandth of each row's largest score
    run, _ = formats.run_onnx(path)
    return lambda x: run(x) + 1e-3 * np.abs(run(x)).max(axis=1, keepdims=True)


def load_copy(path, precision, threads):
    return formats.run_onnx(path)[0]


@zoo.hookimpl
def register_runtimes(register):
    register(zoo.Runtime(name="noisy", formats=("onnx",), loader=load_noisy, summary="wrong in the fourth digit"))
    register(zoo.Runtime(name="copy", formats=("onnx",), loader=load_copy, summary="onnxruntime again"))
"""


def test_a_runtime_that_computes_something_else_is_refused(fake_dist: FakeDist, exported: dict[str, Path]) -> None:
    fake_dist("zoo-noisy-runtime", NOISY)
    assert {"noisy", "copy"} <= set(get_registry().runtimes)
    with pytest.raises(ZooError, match=r"noisy:float32 does not compute .* as its own runtime does: .* float32 "
                                        r"rounding steps apart, more than 128; use another runtime"):  # fmt: skip
        load_runner(exported["onnx"], runtime="noisy")
    run, _ = load_runner(exported["onnx"], runtime="copy")
    assert (
        isinstance(run, ProvedRun)
        and run.proof == "within 0 float32 rounding steps of the file's own runtime on random inputs"
    )


def test_predict_eval_and_bench_take_a_runtime(exported: dict[str, Path], tmp_path: Path) -> None:
    image = tmp_path / "digit.png"
    Image.fromarray(np.full((28, 28), 40, np.uint8)).save(image)
    own = CliRunner().invoke(cli, ["predict", str(exported["onnx"]), str(image)])
    other = CliRunner().invoke(cli, ["predict", str(exported["onnx"]), str(image), "--runtime", "onnxruntime"])
    assert other.exit_code == 0 and other.stdout == own.stdout
    assert "runtime: onnxruntime (float32): within " in other.stderr
    wrong = CliRunner().invoke(cli, ["predict", str(exported["onnx"]), str(image), "--runtime", "torch"])
    assert wrong.exit_code == 1 and "runtime torch does not run onnx files (it runs safetensors); for onnx: " \
        "--runtime onnxruntime" in wrong.stderr and "Traceback" not in wrong.output  # fmt: skip
    scored = CliRunner().invoke(cli, ["eval", str(exported["safetensors"]), "--runtime", "torch", "--json",
                                      "--out", str(tmp_path / "eval")])  # fmt: skip
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["runtime"].startswith("torch (float32): within ")
    unknown = CliRunner().invoke(cli, ["bench", str(exported["onnx"]), "--runtime", "nosuch"])
    assert unknown.exit_code == 1 and "unknown runtime 'nosuch'; known runtimes: onnxruntime" in unknown.stderr
    timed = zoo.bench(exported["onnx"], runtimes=["onnxruntime"], batch_sizes=[1], rounds=1, seconds=0.01)
    assert set(timed.timings) == {"onnx", "onnx/onnxruntime"} and timed.precisions["onnx/onnxruntime"] == "float32"


def test_the_kit_proves_every_runtime_a_plugin_provides(fake_dist: FakeDist) -> None:
    fake_dist("zoo-noisy-runtime", NOISY)
    found = {str(c): c.run() for c in testing.cases("zoo-noisy-runtime") if "untrained mnist_cnn6_16" in str(c)}
    noisy = found["runtime noisy: runs onnx files of untrained mnist_cnn6_16 as their own runtime does"]
    assert noisy.status == "failed" and "float32 rounding steps apart, more than 128" in noisy.detail
    copy = found["runtime copy: runs onnx files of untrained mnist_cnn6_16 as their own runtime does"]
    assert copy.status == "passed", copy.detail
