"""What a command is given is resolved once: one resolution, and at most one hash of a weights file, per command."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image

import zoo
import zoo.references
import zoo.weights
from zoo.cli import cli
from zoo.references import ModelRef, resolve

WEIGHTS = "mnist_cnn6_16:mnist"


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[Any]]]:
    """Every resolution of a name and every check of a weights file's sha256, as they happen."""
    calls: dict[str, list[Any]] = {"resolved": [], "hashed": []}
    resolve_, check = zoo.references._resolve, zoo.weights._check

    def resolving(given: str, runs_dir: Path) -> ModelRef:
        calls["resolved"].append(given)
        return resolve_(given, runs_dir)

    def checking(w: zoo.Weights, path: Path, fix: str) -> Path:
        calls["hashed"].append(w.name)
        return check(w, path, fix)

    monkeypatch.setattr(zoo.references, "_resolve", resolving)
    monkeypatch.setattr(zoo.weights, "_check", checking)
    yield calls


@pytest.fixture
def mnist(idx_root: Callable[[str, int], Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("ZOO_DATA_DIR", str(idx_root("MNIST", 20)))
    monkeypatch.chdir(tmp_path)
    Image.new("L", (28, 28), 0).save(tmp_path / "digit.png")
    return tmp_path


@pytest.mark.parametrize(
    "args",
    [
        ["eval", WEIGHTS],
        ["predict", WEIGHTS, "digit.png"],
        ["export", WEIGHTS, "--onnx", "--safetensors"],
        ["export", "cnn6", "--onnx"],  # an architecture: its default weights
        ["train", "cnn6", "mnist", "--init", WEIGHTS, "--max-steps", "1", "--quiet"],
        ["bench", WEIGHTS, "--formats", "eager,onnx", "--rounds", "1", "--seconds", "0.01", "--batch-sizes", "1"],
    ],
    ids=["eval", "predict", "export", "export-architecture", "train-init", "bench"],
)
def test_each_command_resolves_its_model_once(args: list[str], counted: dict[str, list[Any]], mnist: Path) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert len(counted["resolved"]) == 1 and counted["hashed"] == [WEIGHTS], counted


def test_the_api_resolves_once_and_takes_a_resolved_model(counted: dict[str, list[Any]], mnist: Path) -> None:
    model = zoo.load(WEIGHTS)
    assert model.zoo_weights is not None and model.zoo_weights.name == WEIGHTS
    assert counted == {"resolved": [WEIGHTS], "hashed": [WEIGHTS]}
    ref = resolve(WEIGHTS)
    zoo.predict(ref, [mnist / "digit.png"])
    zoo.evaluate(ref)
    zoo.export(ref, ["onnx"])
    assert len(counted["resolved"]) == 2 and len(counted["hashed"]) == 2, "a ModelRef is not resolved again"


def test_what_each_name_resolves_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    published = resolve(WEIGHTS)
    assert (published.kind, published.exporter, published.weights and published.weights.name) == (
        "weights",
        None,
        WEIGHTS,
    )
    by_architecture = resolve("cnn6")
    assert by_architecture.weights == published.weights and "no run of mnist_cnn6_16 in runs/" in by_architecture.note
    exported = zoo.export(WEIGHTS, ["onnx"]).files["onnx"]
    onnx_file = resolve(exported)
    assert onnx_file.kind == "file" and onnx_file.exporter is not None and onnx_file.exporter.name == "onnx"
    assert len(onnx_file.sha256) == 64, "checked against the manifest beside it"
    with pytest.raises(zoo.ZooError, match=r"no weights tagged 'mnst'"):
        resolve("cnn6:mnst")
    with pytest.raises(zoo.ZooError, match=r"missing.onnx does not exist"):
        resolve("missing.onnx")


def test_a_run_is_described_by_what_it_came_to(tmp_path: Path) -> None:
    from zoo import runs

    (tmp_path / "config.json").write_text(json.dumps({"train": {"dataset": "mnist", "max_steps": 60}}))
    assert runs.describe(tmp_path) == "not finished: no test accuracy yet"
    (tmp_path / "summary.json").write_text(json.dumps({"test_accuracy": 0.4312, "epochs": 1}))
    assert runs.describe(tmp_path) == "43.12% test accuracy on mnist, 1 epoch(s), stopped at --max-steps 60"
