"""The command line as the README shows it: `zoo list`, `zoo info`, `zoo plugins`, and its errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import FakeDist

from zoo.cli import cli
from zoo.loader import get_registry


def zoo(*args: str, **env: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env or None)


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m zoo`` in a fresh process, as a user's shell would."""
    return subprocess.run(
        [sys.executable, "-m", "zoo", *args], capture_output=True, text=True, env={**os.environ, **env}, check=False
    )


def test_list_shows_every_table_aligned() -> None:
    result = zoo("list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Architectures" and "Data sets" in lines
    assert "Export formats (zoo export ARCH --format NAME)" in lines  # where the unknown-format error points
    assert any(line.split()[:3] == ["pt2", "torch_export", ".pt2"] for line in lines)
    header = lines[1]
    assert header.split() == ["name", "aliases", "input", "classes", "summary", "provider"]
    row = next(line for line in lines if line.startswith("lenet_bn"))
    assert row.index("1x28x28") == header.index("input")
    assert row.endswith("zoo-classifiers 0.1.0")
    assert any(line.startswith("sevenseg ") and "10,000 / 2,000" in line for line in lines)


def test_list_glob_filter() -> None:
    output = zoo("list", "*cnn*").output
    assert "mnist_cnn32" in output and "mnist_cnn6_16" in output
    assert "lenet_bn" not in output and "Data sets" not in output
    assert "fashionmnist" in zoo("list", "fmnist").output  # aliases match too


def test_list_json() -> None:
    data = json.loads(zoo("list", "--json").output)
    lenet = next(a for a in data["architectures"] if a["name"] == "lenet_bn")
    assert lenet["input_shape"] == [1, 28, 28] and lenet["provider"]["distribution"] == "zoo-classifiers"
    cifar = next(d for d in data["datasets"] if d["name"] == "cifar10")
    assert cifar["shape"] == [3, 32, 32] and cifar["classes"][0] == "airplane" and cifar["train_size"] == 50_000
    pt2 = next(f for f in data["formats"] if f["name"] == "pt2")
    assert pt2["suffix"] == ".pt2" and pt2["runs_code"] and pt2["proof"] == "float32"


def test_info_export_format() -> None:
    lines = zoo("info", "torch_export").output.splitlines()
    assert lines[0] == "pt2: torch.export program, TorchScript's successor; provided by zoo-classifiers 0.1.0"
    assert (
        "files: *.pt2, written by `zoo export ARCH --format pt2`; `zoo predict` and `zoo eval` run them by that suffix"
        in lines
    )
    assert "loading runs code the file carries: zoo loads such a file only with --trust" in lines
    assert "bit-identical to the model" in zoo("info", "safetensors").output
    assert "at least 99.5% of images and at most 0.3 points of accuracy lost" in zoo("info", "int8").output


def test_list_with_no_match_fails() -> None:
    result = zoo("list", "resnet*")
    assert result.exit_code == 1
    assert result.stderr == "zoo: error: nothing matches resnet*; run `zoo list` without a pattern to see everything\n"


@pytest.mark.parametrize(
    ("name", "total", "macs"),
    [
        ("cnn32", "421,642", "4,241,152"),
        ("cnn6", "60,074", "199,968"),
        ("lenet", "62,158", "416,520"),
        ("cifar_seq", "296,426", "13,538,304"),
    ],
)
def test_info_architecture(name: str, total: str, macs: str) -> None:
    result = zoo("info", name)
    assert result.exit_code == 0, result.output
    assert f"trainable parameters: {total}\n" in result.output
    flops = f"{2 * int(macs.replace(',', '')):,}"  # the published numbers, now counted by FlopCounterMode
    assert f"multiply-accumulates per image: {macs} (FLOPs: {flops})\n" in result.output
    assert "tutorial recipe: adam" in result.output and "default recipe:" in result.output


def test_info_per_layer_counts_as_the_tutorial_prints_them() -> None:
    output = zoo("info", "mnist_cnn6_16").output
    assert "54 + 6" in output and "48,000 + 120" in output and "840 + 10" in output


def test_info_architecture_sized_for_a_dataset() -> None:
    output = zoo("info", "cnn6_16", "--dataset", "cifar10").output
    assert "input 3x32x32, 10 classes (sized for cifar10)" in output
    assert "trainable parameters: 81,302" in output  # 16x6x6 feature maps feed the first linear layer


def test_info_dataset_reads_the_data_directory(idx_root: Callable[[str, int], Path]) -> None:
    root = idx_root("MNIST", 12)
    result = zoo("info", "mnist", "--data-dir", str(root))
    assert result.exit_code == 0, result.output
    assert "files: ready (12 train / 12 test images)" in result.stdout
    assert "zoo: reading mnist's files to check them" in result.stderr, "seconds of reading are announced first"
    missing = zoo("info", "fashion", "--data-dir", str(root)).output
    assert "files: not ready. FashionMNIST is not downloaded" in missing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["info", "cnn"],
            "zoo: error: name 'cnn' is ambiguous: it could be mnist_cnn32, mnist_cnn6_16; give more of the name",
        ),
        (["info", "lenat"], "zoo: error: unknown name 'lenat'; did you mean lenet_bn? known names:"),
        (["info", "lenet", "--dataset", "imagenet"], "zoo: error: unknown data set 'imagenet'"),
        (
            ["info", "mnist", "--data-dir", "/no/such/dir"],
            "zoo: error: data directory '/no/such/dir' (--data-dir) does not exist",
        ),
    ],
)
def test_bad_input_is_one_line_on_stderr(args: list[str], message: str) -> None:
    result = zoo(*args)
    assert result.exit_code == 1
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_debug_shows_the_traceback() -> None:
    result = zoo("--debug", "info", "lenat")
    assert result.exit_code == 1 and type(result.exception).__name__ == "UnknownName"
    assert zoo("info", "lenat", ZOO_DEBUG="1").exception.__class__.__name__ == "UnknownName"


def test_plugins_lists_distributions_and_json() -> None:
    output = zoo("plugins").output
    assert output.splitlines()[0].split() == ["plugin", "distribution", "version", "status", "provides", "location"]
    assert "plugins/architectures.py" in output
    assert "architectures  zoo-classifiers  0.1.0    loaded  architecture mnist_cnn32" in output
    data = json.loads(zoo("plugins", "--json").output)
    assert {p["name"]: p["status"] for p in data} == {
        "architectures": "loaded",
        "datasets": "loaded",
        "formats": "loaded",
        "runtimes": "loaded",
        "weights": "loaded",
    }


@pytest.mark.slow
def test_python_dash_m_zoo_and_heavy_imports() -> None:
    """`zoo --help` and `zoo list` must not import torch: it costs seconds."""
    probe = (
        "import sys\nfrom zoo.cli import cli\n"
        "try:\n    cli(sys.argv[1:], prog_name='zoo')\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'onnxruntime', 'numpy') if m in sys.modules))"
    )
    for args in (["--help"], ["list"], ["plugins"]):
        out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, check=True).stdout
        assert out.strip().endswith("[]"), f"zoo {' '.join(args)} imported {out.splitlines()[-1]}"
    assert "lenet_bn" in run("list").stdout
    result = run("info", "nope")
    assert result.returncode == 1 and result.stderr.startswith("zoo: error: unknown name 'nope'")


@pytest.mark.slow
def test_plugins_and_exporters_folders_in_the_working_directory_do_not_shadow_the_built_ins(tmp_path: Path) -> None:
    """zoo installs its built-ins as zoo.plugins and zoo.exporters: a user's ./plugins package is theirs alone."""
    for name in ("plugins", "exporters"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise ImportError('the user's own package')\n")
        (tmp_path / name / "architectures.py").write_text("raise ImportError('the user's own module')\n")
    result = subprocess.run([sys.executable, "-m", "zoo", "list"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == ""
    assert "lenet_bn" in result.stdout and "sevenseg" in result.stdout


@pytest.mark.slow
def test_ctrl_c_during_start_up_exits_130_without_a_traceback(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "zoo", "train", "cnn6", "sevenseg", "--out", str(tmp_path / "run")]
    with subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True) as process:
        time.sleep(1.0)  # importing torch and building the data: before any training step
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130
        assert process.stderr is not None
        stderr = process.stderr.read()
    assert "Traceback" not in stderr and stderr.startswith("zoo: ")


MATMUL_NET = """
import torch
import zoo


class Attention(torch.nn.Module):
    \"\"\"A linear layer, then a product of the activations with themselves outside any layer (as a ViT's q·kᵀ).\"\"\"

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.embed = torch.nn.Linear(input_shape[2], 16)
        self.head = torch.nn.Linear(input_shape[1] * input_shape[1], num_classes)

    def forward(self, x):
        q = self.embed(x[:, 0])  # N x H x 16
        return self.head((q @ q.transpose(1, 2)).flatten(1))  # N x H x H


@zoo.hookimpl
def register_architectures(register):
    register(zoo.Architecture(name="matmul_net", builder=Attention, summary="a bare matrix product"))
"""


def test_macs_count_matrix_products_outside_layers(fake_dist: FakeDist) -> None:
    fake_dist("zoo-matmul", MATMUL_NET)
    result = zoo("info", "matmul_net")
    assert result.exit_code == 0, result.output
    embed, product, head = 28 * 28 * 16, 28 * 28 * 16, 28 * 28 * 10  # per image, for 1x28x28 inputs
    total = embed + product + head
    assert (f"multiply-accumulates per image: {total:,} (FLOPs: {2 * total:,}), {product:,} of them in products "
            f"outside the layers") in result.output  # fmt: skip


@pytest.mark.parametrize("arch", sorted({w.architecture for w in get_registry().weights.values()}))
def test_info_explains_the_default_mark_only_where_it_marks_one(arch: str) -> None:
    """With one set of weights (a plugin's `--default` ones, say) there is no `*`: the legend went with none."""
    result = CliRunner().invoke(cli, ["info", arch])
    assert result.exit_code == 0, result.output
    table = result.stdout.split("published weights", 1)[1]
    marked = [line for line in table.splitlines()[2:] if " * " in line]
    assert len(marked) == (len(get_registry().weights_of(arch)) > 1)
    assert ("* is the default" in table) == bool(marked)
