"""`zoo export`: every format for every architecture, proven equivalent by its own runtime, or nothing written."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import onnx
import onnxruntime
import pytest
import torch
from click.testing import CliRunner, Result
from conftest import FakeDist
from onnx.reference import ReferenceEvaluator
from safetensors import safe_open

import zoo as zoo_api
from zoo.cli import cli
from zoo.exporting import DEFAULT_ULPS, ExportError, export, rounding_steps
from zoo.loader import load_registry

REGISTRY = load_registry()
ARCHS = sorted(REGISTRY.architectures)
FORMATS = sorted(name for name, e in REGISTRY.exporters.items() if e.proof != "approximate")
"""What `zoo export` writes by default; approximate formats need the data set's images and are written when named."""


def zoo(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny run of every architecture on generated digits of its own shape."""
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for arch in ARCHS:
        dataset = "sevenseg_rgb" if REGISTRY.architectures[arch].input_shape[0] == 3 else "sevenseg"
        result = zoo(
            "train",
            arch,
            dataset,
            "--epochs",
            "1",
            "--limit",
            "256",
            "--batch-size",
            "64",
            "--out",
            str(root / arch),
            "--quiet",
        )
        assert result.exit_code == 0, result.output
        runs[arch] = root / arch
    return runs


@pytest.mark.parametrize("arch", ARCHS)
def test_every_format_is_proven_for_a_trained_model(arch: str, trained: dict[str, Path]) -> None:
    result = export(str(trained[arch]))
    assert set(result.files) == set(FORMATS)
    assert all(path.is_file() for path in result.files.values())
    assert {(c.format, c.inputs, c.batch_size) for c in result.checks} == {
        (f, kind, b) for f in FORMATS for kind in ("real", "random") for b in (1, 2, 64)
    }
    assert all(c.passed and c.ulps <= DEFAULT_ULPS for c in result.checks)
    assert all(c.max_abs == 0 for c in result.checks if c.format == "safetensors"), "safetensors is bit-identical"


@pytest.mark.parametrize("arch", ARCHS)
def test_every_format_is_proven_for_an_untrained_model(arch: str, tmp_path: Path) -> None:
    result = zoo("export", arch, "--untrained", "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data["files"]) == set(FORMATS) and all(c["passed"] for c in data["checks"])
    assert {c["inputs"] for c in data["checks"]} == {"random"}  # no data set: random inputs alone


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")  # reading TorchScript on purpose
def test_manifest_and_metadata_inside_every_file(trained: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = zoo("export", str(trained["lenet_bn"]), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "TorchScript is deprecated" in result.stderr and "Warning" not in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["architecture"] == "lenet_bn" and manifest["dataset"] == "sevenseg"
    assert manifest["classes"] == list("0123456789") and manifest["opset"] == 17
    assert set(manifest["versions"]) == {"zoo", "torch", "onnx", "onnxruntime"}
    for entry in manifest["files"].values():
        data = (out / entry["path"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
    assert len(manifest["verification"]) == 4 * 6

    with safe_open(str(out / "lenet_bn.safetensors"), framework="pt") as f:
        assert f.metadata()["architecture"] == "lenet_bn"
    props = {p.key: p.value for p in onnx.load(str(out / "lenet_bn.onnx")).metadata_props}
    assert props["architecture"] == "lenet_bn" and json.loads(props["mean"]) == [0.1002]
    extra = {"zoo.json": ""}
    torch.jit.load(str(out / "lenet_bn.torchscript.pt"), _extra_files=extra)
    assert json.loads(extra["zoo.json"])["classes"] == list("0123456789")
    extra = {"zoo.json": ""}
    torch.export.load(str(out / "lenet_bn.pt2"), extra_files=extra)
    assert json.loads(extra["zoo.json"])["input_shape"] == [1, 28, 28]


def test_one_format_and_the_newest_run_of_an_architecture(trained: dict[str, Path], tmp_path: Path) -> None:
    result = zoo("export", "cnn32", "--onnx", "--runs-dir", str(trained["mnist_cnn32"].parent), "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "mnist_cnn32.onnx"]
    accuracy = json.loads((trained["mnist_cnn32"] / "summary.json").read_text())["test_accuracy"]
    assert (
        f"is the newest run of mnist_cnn32 in {trained['mnist_cnn32'].parent}/: {trained['mnist_cnn32']} "
        f"({accuracy:.2%} test accuracy on sevenseg, 1 epoch(s))" in result.stderr
    ), "which run, and what it is worth"
    default = zoo("export", "cnn32", "--onnx", "--force", "--runs-dir", str(trained["mnist_cnn32"].parent))
    assert default.exit_code == 0 and (trained["mnist_cnn32"] / "export" / "mnist_cnn32.onnx").is_file()
    pt2 = zoo("export", "cnn32", "--pt2", "--runs-dir", str(trained["mnist_cnn32"].parent), "--out", str(tmp_path))
    assert pt2.exit_code == 0, pt2.output
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"onnx", "pt2"}, "an earlier export stays in the manifest"
    assert {c["format"] for c in manifest["verification"]} == {"onnx", "pt2"}


BROKEN = """
import copy

import onnx
import torch

import zoo
from zoo.card import encode
from zoo.exporters import formats


def perturbed(change):
    def write(model, example, meta, path, opset):
        model = copy.deepcopy(model)
        with torch.no_grad():
            change(model)
        formats.write_onnx(model, example, meta, path, opset)

    return write


def all_weights(model):  # every parameter off by 1e-3
    for p in model.parameters():
        p.mul_(1 + 1e-3)


def one_layer(model):  # the last layer's weights off by 1e-4
    [p for n, p in model.named_parameters() if n.endswith("weight")][-1].mul_(1 + 1e-4)


def no_bias(model):  # the last bias dropped
    [p for n, p in model.named_parameters() if n.endswith("bias")][-1].zero_()


def write_static(model, example, meta, path, opset):  # no dynamic batch axis
    torch.onnx.export(model, (example,), str(path), input_names=["input"], opset_version=opset, dynamo=False)
    proto = onnx.load(str(path))
    proto.metadata_props.extend(onnx.StringStringEntryProto(key=k, value=v) for k, v in encode(meta).items())
    onnx.save(proto, str(path))


@zoo.hookimpl
def register_exporters(register):
    for name, change in [("all_weights", all_weights), ("one_layer", one_layer), ("no_bias", no_bias)]:
        register(zoo.Exporter(name=name, suffix=f".{name}.onnx", writer=perturbed(change), runner=formats.run_onnx,
                              summary="a broken ONNX writer"))
    register(zoo.Exporter(name="static_onnx", suffix=".static.onnx", writer=write_static,
                          runner=formats.run_onnx, summary="no dynamic batch axis"))
"""


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the broken writers use the legacy exporter directly
@pytest.mark.parametrize("arch", ARCHS)
def test_a_format_that_is_not_equivalent_fails_and_writes_nothing(
    arch: str, fake_dist: FakeDist, trained: dict[str, Path], tmp_path: Path
) -> None:
    """Real errors stay far outside the float32 tolerance, for every built-in."""
    fake_dist("zoo-broken-formats", BROKEN)
    broken = ["all_weights", "one_layer", "no_bias", "static_onnx"]
    result = zoo(
        "export", str(trained[arch]), *(a for b in broken for a in ("--format", b)), "--out", str(tmp_path / "out")
    )
    assert result.exit_code == 1
    for name in ("all_weights", "one_layer", "no_bias"):
        assert f"{name} at batch size 1, 2, 64 (" in result.stderr, name
    assert "static_onnx could not be run: " in result.stderr and "Got invalid dimensions" in result.stderr
    assert "FAILED" in result.stdout  # the table of what was measured comes first
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json"], "no file under a final name"
    checks = json.loads((tmp_path / "out" / "manifest.json").read_text())["verification"]
    for name in ("all_weights", "one_layer", "no_bias"):
        assert max(c["ulps"] for c in checks if c["format"] == name) > DEFAULT_ULPS


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["resnet9"], "unknown architecture 'resnet9'"),
        (["cnn32:kmnist"], "mnist_cnn32 has no weights tagged 'kmnist'; did you mean mnist_cnn32:mnist?"),
        (["cnn32", "--untrained", "--format", "tflite"], "unknown export format 'tflite'"),
        (["cnn32", "--untrained", "--batch-sizes", "1,x"], "is not a comma-separated list of integers"),
        (["cnn32", "--untrained", "--onnx", "--opset", "99"], "--opset must be an ONNX opset from 7 to 20"),
        (["cnn32", "--untrained", "--onnx", "--opset", "0"], "--opset must be an ONNX opset from 7 to 20"),
        (["cnn32", "--untrained", "--onnx", "--ulps", "inf"], "--ulps must be a finite number"),
        (["cnn32", "--untrained", "--batch-sizes", "1" + "0" * 30], "--batch-sizes must be integers from 1 to"),
    ],
)
def test_bad_export_input(args: list[str], message: str, tmp_path: Path) -> None:
    result = zoo("export", *args, "--out", str(tmp_path / "out"))
    assert result.exit_code != 0 and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not any(p.suffix in (".onnx", ".pt2", ".pt") for p in (tmp_path / "out").glob("*"))


def test_an_output_folder_that_cannot_be_written_is_named_before_any_work(tmp_path: Path) -> None:
    result = zoo("export", "cnn6", "--untrained", "--onnx", "--out", "/sys")
    assert result.exit_code == 1 and result.stderr.startswith("zoo: error: cannot write to /sys ("), result.stderr
    assert result.stderr.count("\n") == 1 and "pass --out DIR" in result.stderr


FULL_DISK = """
import os, sys
from pathlib import Path
out, name = Path(sys.argv[1]), sys.argv[2]
out.mkdir()
(out / f".zoo-tmp-{os.getpid()}-{name}").symlink_to("/dev/full")  # the temporary file: its writes fail (ENOSPC)
from zoo.cli import main
sys.argv = ["zoo", "export", "cnn6", "--untrained", "--format", sys.argv[3], "--out", str(out)]
main()
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full, whose writes fail as on a full disk")
@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "safetensors"])
def test_a_full_disk_is_one_line_naming_the_folder_for_every_format(fmt: str, tmp_path: Path) -> None:
    """Writes that fail with ENOSPC (the kernel's /dev/full): TorchScript and .pt2 aborted the process in C++
    (exit 134), ONNX said "not equivalent". (safetensors replaces a link instead of writing through it, so
    /dev/full cannot stand in for its file; test_durability covers its full disk.)"""
    out = tmp_path / "out"
    name = f"mnist_cnn6_16-untrained{REGISTRY.exporters[fmt].suffix}"
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(out), name, fmt], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert f"no space left to write {name} in {out}" in done.stderr and "not equivalent" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"], "no file, temporary or final, is left"
    assert json.loads((out / "manifest.json").read_text())["files"] == {}


@pytest.mark.slow
def test_an_export_killed_at_any_write_leaves_every_file_with_its_own_entry(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """SIGKILL at each write of an `export --force` over an earlier export of other weights: each file the manifest
    lists is the file it names, so zoo loads every one (before, a kill between the files and the manifest left
    proven files refused as "changed after export")."""
    import signal

    from zoo.files import KILL_AT_WRITE_ENV, sha256
    from zoo.references import resolve

    out, other = tmp_path / "out", tmp_path / "other"
    assert zoo("export", str(trained["mnist_cnn6_16"]), "--onnx", "--safetensors", "--out", str(out)).exit_code == 0
    assert zoo("train", "cnn6", "sevenseg", "--max-steps", "2", "--out", str(other), "--quiet").exit_code == 0
    command = [sys.executable, "-m", "zoo", "export", str(other), "--onnx", "--safetensors", "--out", str(out),
               "--force"]  # fmt: skip
    for n in range(1, 12):
        killed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, KILL_AT_WRITE_ENV: str(n)})
        files = json.loads((out / "manifest.json").read_text())["files"]
        for entry in files.values():
            assert sha256(out / entry["path"]) == entry["sha256"], f"killed at write {n}: {entry['path']}"
        for path in out.glob("mnist_cnn6_16*"):
            resolve(path)  # listed and matching, or not listed: never refused
        if killed.returncode == 0:
            assert n > 3, "killed at the manifest, each file and the manifest again"
            assert {e["sha256"] for e in files.values()} == {sha256(p) for p in out.glob("mnist_cnn6_16*")}
            break
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    else:
        pytest.fail("export never finished")


def test_one_format_can_be_named_on_its_own_in_python(tmp_path: Path) -> None:
    result = export("cnn6", "onnx", untrained=True, out=tmp_path)
    assert list(result.files) == ["onnx"]


def test_an_earlier_export_is_kept_unless_forced(trained: dict[str, Path], tmp_path: Path) -> None:
    assert zoo("export", str(trained["cifar_seq"]), "--onnx", "--out", str(tmp_path)).exit_code == 0
    before = (tmp_path / "cifar_seq.onnx").read_bytes()
    result = zoo("export", str(trained["cifar_seq"]), "--onnx", "--out", str(tmp_path))
    assert result.exit_code == 1 and "already exist; pass --force" in result.stderr
    assert (tmp_path / "cifar_seq.onnx").read_bytes() == before
    assert zoo("export", str(trained["cifar_seq"]), "--onnx", "--out", str(tmp_path), "--force").exit_code == 0


def test_exported_files_predict_and_evaluate(trained: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    export(str(trained["mnist_cnn6_16"]), out=tmp_path)
    images, _ = REGISTRY.datasets["sevenseg"].load("test", tmp_path)
    Image.fromarray(images[0, 0].numpy()).save(tmp_path / "digit.png")
    answers = set()
    for name in (
        "mnist_cnn6_16.onnx",
        "mnist_cnn6_16.pt2",
        "mnist_cnn6_16.torchscript.pt",
        "mnist_cnn6_16.safetensors",
    ):
        result = zoo("predict", str(tmp_path / name), str(tmp_path / "digit.png"), "--json", "--trust")
        assert result.exit_code == 0, result.output
        answers.add(json.dumps(json.loads(result.stdout)[0]["top"][0][0]))
    assert len(answers) == 1, "every format predicts the same class"
    run_accuracy = json.loads(zoo("eval", str(trained["mnist_cnn6_16"]), "--json").stdout)["accuracy"]
    onnx_eval = zoo("eval", str(tmp_path / "mnist_cnn6_16.onnx"), "--json", "--out", str(tmp_path / "e"))
    assert json.loads(onnx_eval.stdout)["accuracy"] == pytest.approx(run_accuracy)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["lenet_bn", "cifar_seq"])
def test_the_same_weights_give_byte_identical_files_in_every_format(
    arch: str, trained: dict[str, Path], tmp_path: Path
) -> None:
    """Two `zoo export` processes (each with its own hash seed, which orders Python's and Rust's hash maps), every
    format the data set allows: the manifest's sha256 are a property of the weights."""
    exported = []
    for n, seed in enumerate(("1", "2")):
        out = tmp_path / str(n)
        command = [sys.executable, "-m", "zoo", "export", str(trained[arch]), "--all", "--out", str(out)]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": seed})
        assert done.returncode in (0, 1), done.stderr  # int8 may be refused on a one-epoch model: that is judged
        exported.append({p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert exported[0].keys() == exported[1].keys() and len(exported[0]) >= len(FORMATS) + 2  # + fp16, manifest
    assert [name for name in exported[0] if exported[0][name] != exported[1][name]] == []


def test_predict_with_onnx_never_imports_torch(trained: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    export(str(trained["mnist_cnn32"]), ["onnx"], out=tmp_path)
    Image.new("L", (50, 40), 200).save(tmp_path / "grey.png")
    probe = (
        "import sys\nfrom zoo.cli import cli\n"
        "try:\n    cli(sys.argv[1:], prog_name='zoo')\nexcept SystemExit:\n    pass\n"
        "print('torch imported' if 'torch' in sys.modules else 'no torch')"
    )
    args = ["predict", str(tmp_path / "mnist_cnn32.onnx"), str(tmp_path / "grey.png")]
    out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, check=True).stdout
    assert "grey.png: " in out and out.strip().endswith("no torch")


def test_library_export_raises_on_mismatch_with_the_result(trained: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ExportError) as info:
        export(str(trained["lenet_bn"]), ["onnx"], out=tmp_path, ulps=0.0)
    assert info.value.result is not None and not all(c.passed for c in info.value.result.checks)


FLIPPING = """
import numpy as np
import zoo
from zoo.exporters import formats


def run_flipping(path):
    run, meta = formats.run_onnx(path)

    def flipped(x):  # the top class of every 16th image moved to the next class: 6.25% of answers changed
        scores = run(x)
        rows = np.arange(0, len(scores), 16)
        scores[rows] = np.roll(scores[rows], 1, axis=1)
        return scores

    return flipped, meta


@zoo.hookimpl
def register_exporters(register):
    for name, agreement in [("flipping", 0.995), ("flipping_allowed", 0.9)]:
        register(zoo.Exporter(name=name, suffix=f".{name}.onnx", writer=formats.write_onnx, runner=run_flipping,
                              summary="6.25% of answers changed", proof="approximate", min_agreement=agreement,
                              max_accuracy_drop=0.5))
"""  # fmt: skip


def test_an_approximate_format_is_judged_by_top1_agreement_on_the_test_split(
    fake_dist: FakeDist, trained: dict[str, Path], tmp_path: Path
) -> None:
    fake_dist("zoo-flipping", FLIPPING)
    out = tmp_path / "out"
    result = zoo("export", str(trained["mnist_cnn6_16"]), "--format", "flipping", "--format", "flipping_allowed",
                 "--out", str(out))  # fmt: skip
    assert result.exit_code == 1
    assert "flipping on 2000 test images: top-1 agreement 93.75%" in result.stderr
    assert "needed: on the test split, the model's top class on at least 99.5% of images" in result.stderr
    assert "(to accept this file: --min-agreement flipping=0.937)" in result.stderr  # the option that changes it
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "mnist_cnn6_16.flipping_allowed.onnx"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"]["flipping_allowed"]["proof"] == {
        "policy": "approximate", "min_agreement": 0.9, "max_accuracy_drop": 0.5
    }  # fmt: skip
    judged = [c for c in manifest["verification"] if c["format"] == "flipping_allowed"]
    assert [(c["inputs"], c["batch_size"], c["top1_agreement"]) for c in judged] == [("test", 2000, 0.9375)]


def test_the_user_sets_an_approximate_formats_thresholds_per_format(
    fake_dist: FakeDist, trained: dict[str, Path], tmp_path: Path
) -> None:
    fake_dist("zoo-flipping", FLIPPING)
    run = str(trained["mnist_cnn6_16"])
    result = zoo("export", run, "--format", "flipping", "--format", "flipping_allowed", "--out", str(tmp_path),
                 "--min-agreement", "flipping=0.93", "--max-accuracy-drop", "flipping=7", "--max-accuracy-drop",
                 "flipping_allowed=7")  # fmt: skip
    assert result.exit_code == 0, result.output
    proofs = {f: e["proof"] for f, e in json.loads((tmp_path / "manifest.json").read_text())["files"].items()}
    assert proofs == {
        "flipping": {"policy": "approximate", "min_agreement": 0.93, "max_accuracy_drop": 0.07},
        "flipping_allowed": {"policy": "approximate", "min_agreement": 0.9, "max_accuracy_drop": 0.07},
    }
    stricter = zoo("export", run, "--format", "flipping_allowed", "--out", str(tmp_path / "strict"),
                   "--min-agreement", "flipping_allowed=0.95")  # fmt: skip
    assert stricter.exit_code == 1 and "top-1 agreement 93.75%" in stricter.stderr
    assert "at least 95.0% of images" in stricter.stderr
    for option, value, error in [
        ("--min-agreement", "onnx=0.9", "--min-agreement names onnx, which is not an approximate format being "
                                        "exported (those here: flipping)"),
        ("--min-agreement", "flipping=1.5", "--min-agreement: takes FORMAT=NUMBER with a fraction above 0 and at "
                                            "most 1, such as onnx_int8=0.99; got 'flipping=1.5'"),
        ("--max-accuracy-drop", "flipping", "--max-accuracy-drop: takes FORMAT=NUMBER with points from 0 to below 100"),
        ("--max-accuracy-drop", "flipping=nan", "got 'flipping=nan'"),
        ("--min-agreement", "bogus=0.9", "--min-agreement names 'bogus': unknown export format"),
    ]:  # fmt: skip
        refused = zoo("export", run, "--format", "flipping", "--onnx", "--out", str(tmp_path / "x"), option, value)
        assert refused.exit_code != 0 and error in refused.stderr, refused.stderr
        assert not (tmp_path / "x").exists()
    twice = zoo("export", run, "--format", "flipping", "--out", str(tmp_path / "x"), "--min-agreement", "flipping=0.9",
                "--min-agreement", "flipping=0.8")  # fmt: skip
    assert twice.exit_code != 0 and "--min-agreement: gives flipping two values" in twice.stderr
    # a stricter export that fails over a proved file leaves it, and its entry, in place
    flipping = (tmp_path / "mnist_cnn6_16.flipping.onnx").read_bytes()
    again = zoo("export", run, "--format", "flipping", "--out", str(tmp_path), "--force")
    assert again.exit_code == 1 and (tmp_path / "mnist_cnn6_16.flipping.onnx").read_bytes() == flipping
    kept = json.loads((tmp_path / "manifest.json").read_text())["files"]["flipping"]
    assert kept["proof"] == {"policy": "approximate", "min_agreement": 0.93, "max_accuracy_drop": 0.07}


def test_an_approximate_format_without_the_test_images_is_not_written(tmp_path: Path) -> None:
    result = zoo("export", "cnn6", "--untrained", "--format", "int8", "--out", str(tmp_path))
    assert result.exit_code == 1
    assert "onnx_int8 is approximate and is proved on the test split's images, which are not at hand" in result.stderr
    assert not list(tmp_path.glob("*.onnx"))


LOOSE_INT8 = """
import zoo


@zoo.hookimpl
def register_exporters(register):
    register(zoo.Exporter(name="int8_loose", suffix=".loose.int8.onnx", writer="zoo.exporters.formats:write_onnx_int8",
                          runner="zoo.exporters.formats:run_onnx", summary="onnx_int8, judged loosely",
                          proof="approximate", min_agreement=0.9))
"""  # fmt: skip


@pytest.mark.parametrize("arch", ["mnist_cnn32", "lenet_bn"])
def test_int8_and_fp16_files_are_smaller_and_proved(
    arch: str, fake_dist: FakeDist, trained: dict[str, Path], tmp_path: Path
) -> None:
    """The int8 writer, under a looser agreement threshold: the tests' one-epoch models have too many near ties for
    99.5% (the built-in onnx_int8's figures on the real test splits: tests/benchmarks/int8_variants.py)."""
    fake_dist("zoo-loose", LOOSE_INT8)
    result = export(str(trained[arch]), ["onnx", "onnx_fp16", "int8_loose"], out=tmp_path)
    size = {name: path.stat().st_size for name, path in result.files.items()}
    # int8 weights are a quarter of float32's; the output layer's stay float32 (a few kB for these nets)
    assert size["onnx_fp16"] <= 0.55 * size["onnx"] and size["int8_loose"] <= 0.34 * size["onnx"]
    judged = {c.format: c for c in result.checks if c.inputs == "test"}
    assert set(judged) == {"onnx_fp16", "int8_loose"} and all(c.batch_size == 2000 for c in judged.values())
    assert judged["onnx_fp16"].top1_agreement >= 0.995
    assert judged["int8_loose"].top1_agreement >= 0.9 and judged["int8_loose"].accuracy_change >= -0.003
    graph = onnx.load(str(result.files["int8_loose"]))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.graph.node} and graph.metadata_props


ONNX_FORMATS = sorted(name for name, e in REGISTRY.exporters.items() if e.suffix.endswith(".onnx"))
LOG_SOFTMAX = {"mnist_cnn6_16"}
"""The built-ins whose last layer is log_softmax: their scores are log-probabilities."""


@pytest.mark.parametrize("arch", ARCHS)
def test_every_onnx_file_runs_in_onnxs_reference_evaluator(arch: str, trained: dict[str, Path], tmp_path: Path) -> None:
    """Every ONNX format, run by onnx's own reference evaluator (a consumer that fuses nothing): a float32 file within
    the float32 tolerance of the model, an approximate one agreeing with onnxruntime on the same file. The files are
    portable: explicit pads, the opset imports they use, nodes naming their module, int8 scores left in float32."""
    loose = {f: 0.5 for f in ONNX_FORMATS if REGISTRY.exporters[f].proof == "approximate"}  # one-epoch models
    result = export(str(trained[arch]), ONNX_FORMATS, out=tmp_path, min_agreement=loose, max_accuracy_drop=loose)
    assert sorted(result.files) == ONNX_FORMATS
    model = zoo_api.load(str(trained[arch]))
    x = torch.randn(16, *model.zoo_card.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(x).numpy()
    for fmt, path in result.files.items():
        exporter, proto = REGISTRY.exporters[fmt], onnx.load(str(path))
        got = ReferenceEvaluator(proto).run(None, {"input": x.numpy()})[0]
        if exporter.proof == "approximate":
            runtime = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            ort = runtime.run(None, {"input": x.numpy()})[0]
            assert (got.argmax(1) == ort.argmax(1)).mean() >= 0.9, fmt
        else:
            assert rounding_steps(expected, got).max() <= DEFAULT_ULPS, fmt
        nodes = proto.graph.node
        assert proto.graph.name == arch and all(n.doc_string for n in nodes), fmt
        assert not [n.name for n in nodes if any(a.name == "auto_pad" for a in n.attribute)], fmt
        assert {o.domain for o in proto.opset_import} == {n.domain for n in nodes} | {""}, fmt
        record = json.loads({p.key: p.value for p in proto.metadata_props}["export"])
        scores = "log_probabilities" if arch in LOG_SOFTMAX else "logits"
        assert record == {"format": fmt, "precision": exporter.precision, "scores": scores,
                          "proof": record["proof"]} and record["proof"]["policy"] == exporter.proof  # fmt: skip
        if exporter.precision == "int8":
            producer = next(n for n in nodes if "scores" in n.output)
            assert proto.opset_import[0].version >= 19 and producer.op_type != "DequantizeLinear", fmt


@pytest.mark.parametrize("arch", ARCHS)
def test_quantization_aware_tuning_rounds_where_and_as_onnxruntimes_int8_file_does(
    arch: str, trained: dict[str, Path], tmp_path: Path
) -> None:
    """onnx_int8_qat trains under the rounding it reads off onnxruntime's int8 file: with that rounding on, the
    PyTorch copy computes what the file computes (a change in how torch names tensors, or in where onnxruntime
    quantizes, shows here), and the tuned copy's file agrees with the model on held-out images at least as well."""
    from torch.nn.utils import parametrize
    from zoo.exporters import qat
    from zoo.exporters.formats import fold_batch_norms, write_onnx_int8

    model = zoo_api.load(str(trained[arch]))
    images = torch.rand(600, *model.zoo_card.input_shape, generator=torch.Generator().manual_seed(0)) * 4 - 2
    check = images[-min(qat.HELD_OUT, len(images) // 4) :]  # the images fine-tuning holds out
    with torch.no_grad():
        wanted = model(check).argmax(1).numpy()
    copy = fold_batch_norms(model)
    weights, activations, agreement = qat._int8_file(copy, images, check, wanted, opset=19)
    modules = dict(copy.named_modules())
    assert weights and set(weights) | set(activations) <= set(modules) and "" in activations
    write_onnx_int8(copy, images[: qat.CALIBRATION], {}, tmp_path / "int8.onnx", 19)
    for name in weights:
        parametrize.register_parametrization(modules[name], "weight", qat.WeightRounding())
    for name, (scale, zero_point) in activations.items():
        qat._round(modules[name], name == "", scale, zero_point)
    with torch.no_grad():
        simulated = copy(images[:200]).numpy()
    session = onnxruntime.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    file = session.run(None, {"input": images[:200].numpy()})[0]
    spread = float(file.max() - file.min())
    assert abs(simulated - file).max() <= 0.05 * spread and (simulated.argmax(1) == file.argmax(1)).mean() >= 0.97
    tuned = qat.fine_tune_for_int8(model, images, opset=19, epochs=2)
    assert qat._int8_file(tuned, images, check, wanted, opset=19)[2] >= agreement


def test_zoo_info_prints_a_files_card_precision_and_proof_without_running_it(
    trained: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = zoo("export", str(trained["mnist_cnn6_16"]), "--all", "--min-agreement", "onnx_int8=0.5",
                 "--max-accuracy-drop", "onnx_int8=0.5", "--out", str(tmp_path))  # fmt: skip
    assert result.exit_code == 0, result.output
    files = json.loads((tmp_path / "manifest.json").read_text())["files"]
    assert set(files) == {n for n, e in REGISTRY.exporters.items() if not e.trains}  # onnx_int8_qat when named

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("zoo info ran the file")

    for loader in ("torch.jit.load", "torch.export.load", "onnxruntime.InferenceSession"):
        monkeypatch.setattr(loader, refuse)
    for fmt, entry in files.items():
        shown = zoo("info", str(tmp_path / entry["path"]))
        assert shown.exit_code == 0, shown.output
        exporter = REGISTRY.exporters[fmt]
        assert f": {fmt} file, {entry['bytes']:,} bytes, sha256 {entry['sha256']}" in shown.output
        assert "model: mnist_cnn6_16" in shown.output and "trained on sevenseg" in shown.output
        assert f"precision: {exporter.precision}; scores: log-probabilities" in shown.output
        assert f"proof: policy {exporter.proof}" in shown.output and ": passed" in shown.output
        assert ("ONNX opset" in shown.output) == entry["path"].endswith(".onnx")
    (tmp_path / files["onnx"]["path"]).write_bytes(b"changed")
    shown = zoo("info", str(tmp_path / files["onnx"]["path"]))
    assert shown.exit_code == 1 and "is not the file" in shown.output and "Traceback" not in shown.output


WARNING_NET = """
import warnings

import torch
import zoo


class Net(torch.nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.fc = torch.nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], num_classes)

    def forward(self, x):
        warnings.warn("the patch size must divide the image", UserWarning)  # a tracer warns like this, every trace
        return self.fc(x.flatten(1))


@zoo.hookimpl
def register_architectures(register):
    register(zoo.Architecture(name="warning_net", builder=Net, summary="a linear layer that warns"))
"""


def test_a_models_warnings_name_the_model_and_format_once_each(fake_dist: FakeDist, tmp_path: Path) -> None:
    fake_dist("zoo-warning-net", WARNING_NET)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export("warning_net", ["onnx", "onnx_fp16", "pt2"], untrained=True, out=tmp_path, dataset="sevenseg")
    said = sorted(str(w.message) for w in caught if "patch size" in str(w.message))
    assert said == sorted(  # built and run once before any format, then traced and proved per format
        f"warning_net{where}: the patch size must divide the image" for where in ("", " as onnx", " as onnx_fp16",
                                                                                 " as pt2")
    )  # fmt: skip
