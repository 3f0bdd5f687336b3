"""Model files are data: formats that run code load only when trusted, and a file changed after export is refused."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import zoo
from zoo import checkpoint
from zoo.cli import cli
from zoo.errors import ZooError
from zoo.exporting import export

META = {
    "architecture": "mnist_cnn6_16",
    "dataset": "sevenseg",
    "classes": list("0123456789"),
    "input_shape": [1, 28, 28],
    "mean": [0.1002],
    "std": [0.2154],
}


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
            crafted.writestr(
                name, json.dumps(config) if name == config_name else buffer.getvalue() if name == payload else data
            )
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


@pytest.mark.parametrize("fmt", ["pt2", "torchscript.pt"])
def test_an_archive_that_would_unpack_past_the_bound_is_refused_before_torch_reads_it(
    fmt: str, exported: Path, tmp_path: Path
) -> None:
    """A zip whose directory declares a 4 GiB record (torch allocates each record whole: a 1.8 MB .pt2 bomb
    reached 3.6 GB): refused from the directory alone, even with --trust."""
    data = bytearray((exported / "export" / f"mnist_cnn6_16.{fmt}").read_bytes())
    end = data.rindex(b"PK\x05\x06")  # the end of the central directory says where it starts (at +16)
    directory = int.from_bytes(data[end + 16 : end + 20], "little")  # its first entry's uncompressed size: at +24
    data[directory + 24 : directory + 28] = (0xFFFFFFF0).to_bytes(4, "little")
    bomb = tmp_path / f"bomb.{fmt}"
    bomb.write_bytes(data)
    result = zoo_cli("predict", str(bomb), str(exported / "digit.png"), "--trust")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert f"{bomb} would unpack to" in result.stderr and "more than the 1,073,741,824 zoo allows" in result.stderr


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
    onnx.save(
        model,
        str(tmp_path / "m.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    result = zoo_cli("predict", str(tmp_path / "m.onnx"), str(exported / "digit.png"))
    assert result.exit_code == 1 and "external data" in result.stderr


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
FIELDS = ["architecture", "dataset", "classes", "input_shape", "mean", "std", "format", "config"]


@pytest.fixture(scope="module")
def checkpoint_file(exported: Path) -> Path:
    return exported / "export" / "mnist_cnn6_16.safetensors"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=JSON, tamper=st.sampled_from(["replace", "delete", "text"]))
def test_any_change_to_a_checkpoints_metadata_is_used_or_refused_in_one_line(
    field: str,
    value: object,
    tamper: str,
    checkpoint_file: Path,
    exported: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    weights, meta = checkpoint.read(checkpoint_file)
    if tamper == "delete":
        meta.pop(field, None)
    else:
        meta[field] = json.dumps(value) if tamper == "text" else value  # "text": a JSON field stored as a plain string
    path = tmp_path_factory.mktemp("fuzz") / "model.safetensors"
    checkpoint.write(path, weights, meta)
    try:
        predictions = zoo.predict(path, [exported / "digit.png"])
    except ZooError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 600
    else:
        assert not predictions[0].error and len(predictions[0].top) == 3


def peak_rss_mb(args: list[str]) -> float:
    """Run `zoo ARGS` in a subprocess; the peak resident memory it reached, in MB."""
    process = subprocess.Popen([sys.executable, "-m", "zoo", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, _, usage = os.wait4(process.pid, 0)
    process.returncode = 1
    assert process.stderr is not None
    process.stderr.close()
    return usage.ru_maxrss / 1024


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"input_shape": [1, 2000, 2000]}, "do not fit mnist_cnn6_16 for 1x2000x2000 images"),  # on the meta device
        ({"input_shape": [1, 4096, 4096]}, "input_shape 1x4096x4096 is larger than zoo handles"),
        ({"classes": [f"c{i}" for i in range(200_000)]}, "bytes long (at most 1,048,576)"),  # before it is parsed
        ({"classes": ["x" * 5_000_000, *"123456789"]}, "bytes long"),
        ({"mean": [0.1, 0.2]}, "mean must list one number per channel (1)"),
        ({"std": [0.0]}, "std must be positive"),
        ({"dataset": "/"}, "name the data set"),
        ({"classes": list("012345678")}, "do not fit mnist_cnn6_16 for 1x28x28 images in 9 classes"),
    ],
    ids=[
        "large-input",
        "huge-input",
        "200k-classes",
        "5MB-class-name",
        "mean-length",
        "std-zero",
        "dataset-root",
        "class-count",
    ],
)
def test_hostile_metadata_is_refused_before_it_costs_memory(
    change: dict[str, object], message: str, checkpoint_file: Path, exported: Path, tmp_path: Path
) -> None:
    weights, meta = checkpoint.read(checkpoint_file)
    hostile = tmp_path / "hostile.safetensors"
    checkpoint.write(hostile, weights, {**meta, **change})
    command = "eval" if "dataset" in change else "predict"
    args = [command, str(hostile), *([str(exported / "digit.png")] if command == "predict" else [])]
    result = zoo_cli(*args)
    assert result.exit_code == 1 and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    baseline = peak_rss_mb(["predict", str(checkpoint_file), str(exported / "digit.png")])
    assert peak_rss_mb(args) < baseline + 150, "refusing a file must cost about what loading a good one does"


def test_non_finite_weights_are_refused(checkpoint_file: Path, exported: Path, tmp_path: Path) -> None:
    saved = checkpoint.load(checkpoint_file)
    broken = {k: v.clone() for k, v in saved.weights.items()}
    next(v for k, v in broken.items() if k.endswith("weight")).fill_(float("nan"))
    checkpoint.save(tmp_path / "nan.safetensors", broken, saved.card)
    result = zoo_cli("predict", str(tmp_path / "nan.safetensors"), str(exported / "digit.png"))
    assert result.exit_code == 1 and "gives non-finite scores: its weights are broken" in result.stderr


def crafted_onnx(path: Path, extra: list[onnx.NodeProto], added: str, **model: object) -> Path:
    """A zoo-looking ONNX classifier (flatten, one matrix product) whose scores get ``added`` from ``extra`` nodes."""
    from onnx import TensorProto, helper, numpy_helper

    from zoo.card import encode

    weight = numpy_helper.from_array(np.zeros((784, 10), np.float32), "weight")
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"]),
        helper.make_node("MatMul", ["flat", "weight"], ["logits"]),
        *extra,
        helper.make_node("Add", ["logits", added], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "crafted",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 10])],
        [weight],
    )
    opsets = model.pop("opset_imports", [helper.make_opsetid("", 17)])
    proto = helper.make_model(graph, opset_imports=opsets, **model)
    for key, value in encode(META).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    return path


def _external(location: str) -> onnx.TensorProto:
    """Ten floats that onnxruntime would read from the file ``location``, relative to the current directory."""
    tensor = onnx.TensorProto(name="v", data_type=onnx.TensorProto.FLOAT, dims=[10])
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    tensor.external_data.add(key="length", value="40")
    return tensor


def _sparse_secret() -> list[onnx.NodeProto]:
    """A Constant whose sparse value is read from ``secret.txt`` beside wherever zoo runs (as onnxruntime does)."""
    from onnx import TensorProto, helper

    values = _external("secret.txt")
    indices = helper.make_tensor("i", TensorProto.INT64, [10], list(range(10)))
    sparse = helper.make_sparse_tensor(values, indices, [10])
    return [helper.make_node("Constant", [], ["leak"], sparse_value=sparse)]


def _function_secret() -> tuple[list[onnx.NodeProto], dict[str, object]]:
    """The same read hidden in a local function's constant."""
    from onnx import helper

    value = _external("secret.txt")
    body = helper.make_function(
        "evil", "Leak", [], ["out"], [helper.make_node("Constant", [], ["out"], value=value)],
        [helper.make_opsetid("", 17)],
    )  # fmt: skip
    extra = {"functions": [body], "opset_imports": [helper.make_opsetid("", 17), helper.make_opsetid("evil", 1)]}
    return [helper.make_node("Leak", [], ["leak"], domain="evil")], extra


def _endless_loop() -> list[onnx.NodeProto]:
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond"], ["cond_out"]), helper.make_node("Identity", ["x"], ["x_out"])],
        "forever",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [10])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [10])],
    )  # fmt: skip
    return [
        helper.make_node("Constant", [], ["zeros"], value=helper.make_tensor("z", TensorProto.FLOAT, [10], [0] * 10)),
        helper.make_node("Constant", [], ["yes"], value=helper.make_tensor("t", TensorProto.BOOL, [], [True])),
        helper.make_node("Loop", ["", "yes", "zeros"], ["leak"], body=body),
    ]


def _huge_constant() -> list[onnx.NodeProto]:
    """32 GiB of zeros from a 64-byte file: the size is a constant in the graph."""
    from onnx import TensorProto, helper

    shape = helper.make_tensor("s", TensorProto.INT64, [2], [1 << 23, 1 << 10])
    return [
        helper.make_node("Constant", [], ["shape"], value=shape),
        helper.make_node("ConstantOfShape", ["shape"], ["big"]),
        helper.make_node("ReduceSum", ["big"], ["leak"], keepdims=0),
    ]


def _size_from_data() -> list[onnx.NodeProto]:
    """An allocation whose size the input image's pixels decide."""
    from onnx import TensorProto, helper

    return [
        helper.make_node("ReduceMax", ["input"], ["peak"], keepdims=0),
        helper.make_node("Cast", ["peak"], ["n"], to=TensorProto.INT64),
        helper.make_node("Constant", [], ["one"], value=helper.make_tensor("o", TensorProto.INT64, [1], [1])),
        helper.make_node("Reshape", ["n", "one"], ["shape"]),
        helper.make_node("ConstantOfShape", ["shape"], ["big"]),
        helper.make_node("ReduceSum", ["big"], ["leak"], keepdims=0),
    ]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (_sparse_secret, "tensor v as external data"),
        (_function_secret, "tensor v as external data"),
        (_endless_loop, "has a Loop node"),
        (_huge_constant, "MiB for one image"),
        (_size_from_data, "the data it is given decides it"),
    ],
    ids=["sparse-external-data", "function-external-data", "endless-loop", "huge-constant", "size-from-data"],
)
@pytest.mark.parametrize("command", ["predict", "eval", "bench"])
def test_a_crafted_onnx_file_is_refused_before_it_runs(
    build: object, message: str, command: str, exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading local files, looping forever or allocating what the file says are refused in one line, for every
    command that runs a file."""
    built = build()  # type: ignore[operator]
    nodes, extra = built if isinstance(built, tuple) else (built, {})
    added = nodes[-1].output[0]
    evil = crafted_onnx(tmp_path / "evil.onnx", nodes, added, **extra)
    (tmp_path / "secret.txt").write_bytes(b"\x00\x00\x80\x3f" * 10)  # 1.0 ten times, if it were read
    monkeypatch.chdir(tmp_path)
    args = {"predict": [str(exported / "digit.png")], "eval": ["sevenseg"], "bench": ["--rounds", "1"]}[command]
    result = zoo_cli(command, str(evil), *args)
    assert result.exit_code == 1, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
