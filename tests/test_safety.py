"""Model files are data: formats that run code load only when trusted, and a file changed after export is refused."""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

import zoo
from zoo.cli import cli
from zoo.errors import ZooError
from zoo.exporting import export

META = {"architecture": "mnist_cnn6_16", "dataset": "sevenseg", "classes": list("0123456789"),
        "input_shape": [1, 28, 28], "mean": [0.1002], "std": [0.2154]}  # fmt: skip


def zoo_cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every format of a tiny mnist_cnn6_16 run, and a digit to classify."""
    root = tmp_path_factory.mktemp("safety")
    run = zoo.train("cnn6", "sevenseg", epochs=1, limit=256, batch_size=64, out=root / "run", progress="none")
    export(str(run.path), out=root / "export")
    Image.new("L", (28, 28), 0).save(root / "digit.png")
    return root


class Overwrite(torch.nn.Module):
    """A TorchScript program that writes chosen bytes into an existing file when it runs, as an attacker's would."""

    def __init__(self, victim: str) -> None:
        super().__init__()
        self.victim = victim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mapped = torch.from_file(self.victim, True, 4, dtype=torch.uint8)
        mapped.copy_(torch.tensor([112, 119, 110, 100], dtype=torch.uint8))  # "pwnd"
        return x.flatten(1)[:, :10] + mapped[:1].float() * 0


def crafted_torchscript(path: Path, victim: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated; this file is made on purpose
        torch.jit.save(torch.jit.script(Overwrite(str(victim))), str(path), _extra_files={"zoo.json": json.dumps(META)})
    return path


class Touch:
    """Unpickling this creates ``marker``: the payload of a crafted .pt2 weight."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return Path.touch, (self.marker,)


def crafted_pt2(source: Path, path: Path, marker: Path) -> Path:
    """A copy of a real .pt2 whose first weight is marked as pickled and replaced by a payload."""
    buffer = io.BytesIO()
    torch.save(Touch(marker), buffer)
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w") as crafted:
        names = original.namelist()
        (config_name,) = [n for n in names if n.endswith("model_weights_config.json")]
        config = json.loads(original.read(config_name))
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True
        payload = config_name.rsplit("/", 1)[0] + "/" + first["path_name"]
        for name in names:
            data = original.read(name)
            crafted.writestr(name, json.dumps(config) if name == config_name else buffer.getvalue() if name == payload
                             else data)  # fmt: skip
    return path


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_a_crafted_torchscript_file_is_refused_unless_trusted(command: str, exported: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"AAAA")
    evil = crafted_torchscript(tmp_path / "model.torchscript.pt", victim)
    args = [command, str(evil), *([str(exported / "digit.png")] if command == "predict" else [])]
    result = zoo_cli(*args)
    assert result.exit_code == 1
    assert "loading one runs code it carries" in result.stderr and "--trust" in result.stderr
    assert victim.read_bytes() == b"AAAA", "the payload ran"
    assert "Traceback" not in result.stderr

    with pytest.raises(ZooError, match="trust=True"):
        zoo.predict(evil, [exported / "digit.png"])
    assert victim.read_bytes() == b"AAAA"

    if command == "predict":  # opting in runs the file: the payload above was real
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            assert zoo_cli(*args, "--trust").exit_code == 0
        assert victim.read_bytes() == b"pwnd"


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_a_crafted_pt2_file_is_refused_unless_trusted(command: str, exported: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    evil = crafted_pt2(exported / "export" / "mnist_cnn6_16.pt2", tmp_path / "model.pt2", marker)
    args = [command, str(evil), *([str(exported / "digit.png")] if command == "predict" else [])]
    result = zoo_cli(*args)
    assert result.exit_code == 1 and "--trust" in result.stderr
    assert not marker.exists(), "the payload ran"
    with pytest.raises(ZooError, match="trust=True"):
        zoo.evaluate(evil)
    assert not marker.exists()

    if command == "predict":
        zoo_cli(*args, "--trust")  # opting in unpickles the payload: it was real
        assert marker.exists()


def test_trusted_formats_load_without_opt_in(exported: Path) -> None:
    for name in ("mnist_cnn6_16.onnx", "mnist_cnn6_16.safetensors"):
        result = zoo_cli("predict", str(exported / "export" / name), str(exported / "digit.png"))
        assert result.exit_code == 0, result.output


def test_a_file_changed_after_export_is_refused(exported: Path, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    for name in ("manifest.json", "mnist_cnn6_16.onnx"):
        (folder / name).write_bytes((exported / "export" / name).read_bytes())
    model = onnx.load(str(folder / "mnist_cnn6_16.onnx"))
    model.graph.initializer[0].raw_data = np.zeros_like(
        onnx.numpy_helper.to_array(model.graph.initializer[0])
    ).tobytes()
    onnx.save(model, str(folder / "mnist_cnn6_16.onnx"))  # still a valid model: only the hash tells
    recorded = json.loads((folder / "manifest.json").read_text())["files"]["onnx"]["sha256"]

    result = zoo_cli("predict", str(folder / "mnist_cnn6_16.onnx"), str(exported / "digit.png"))
    assert result.exit_code == 1
    assert "is not the file" in result.stderr and recorded in result.stderr and "export it again" in result.stderr


def test_onnx_external_data_is_refused(exported: Path, tmp_path: Path) -> None:
    """An ONNX file names the files its external data comes from: zoo reads only self-contained ones."""
    model = onnx.load(str(exported / "export" / "mnist_cnn6_16.onnx"))
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)  # fmt: skip
    result = zoo_cli("predict", str(tmp_path / "m.onnx"), str(exported / "digit.png"))
    assert result.exit_code == 1 and "external data" in result.stderr
