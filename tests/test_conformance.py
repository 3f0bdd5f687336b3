"""The conformance kit (`zoo check`, `zoo.testing`): the built-ins pass it, and broken plugins are told why."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import FakeDist

from zoo.cli import cli
from zoo.errors import ZooError
from zoo.loader import load_registry
from zoo.registry import Architecture
from zoo.testing import assert_conforms, cases, check

REGISTRY = load_registry()


@pytest.mark.parametrize("name", sorted(REGISTRY.architectures) + sorted(REGISTRY.datasets))
def test_every_builtin_conforms(name: str) -> None:
    assert_conforms(name)


BAD_NETS = """
import zoo
from torch import nn


class FixedTen(nn.Sequential):
    def __init__(self, input_shape=(1, 28, 28), num_classes=10):
        c, h, w = input_shape
        super().__init__(nn.Flatten(), nn.Linear(c * h * w, 10))  # ignores num_classes


class Frozen(nn.Module):
    def __init__(self, input_shape=(1, 28, 28), num_classes=10):
        super().__init__()
        self.linear = nn.Linear(1, num_classes)

    def forward(self, x):
        return self.linear(x.mean((1, 2, 3), keepdim=True).flatten(1)).detach().requires_grad_()


@zoo.hookimpl
def register_architectures(register):
    register(zoo.Architecture(name="fixed_ten", builder=FixedTen, summary="always ten outputs"))
    register(zoo.Architecture(name="frozen", builder=Frozen, summary="gradients never reach the weights"))
"""


def test_a_broken_architecture_is_reported_with_the_fix(fake_dist: FakeDist) -> None:
    fake_dist("zoo-bad-nets", BAD_NETS)
    findings = {(f.subject, f.check): f for f in check("zoo-bad-nets")}
    assert findings[("architecture fixed_ten", "builds for fashionmnist (1x28x28, 10 classes)")].ok
    ignores = findings[("architecture fixed_ten", "honours num_classes (1x28x28, 3 classes)")]
    assert not ignores.ok and "gives (1, 10) for one image, not (1, 3)" in ignores.detail
    assert "its builder must size the last layer from num_classes" in ignores.detail
    frozen = findings[("architecture frozen", "ten training steps on a fixed batch lower the loss")]
    assert not frozen.ok and "check that forward uses every layer" in frozen.detail

    result = CliRunner().invoke(cli, ["check", "zoo-bad-nets"])
    assert result.exit_code == 1
    assert "FAIL  architecture frozen: ten training steps on a fixed batch lower the loss" in result.output
    assert " 0 failed" not in result.output.splitlines()[-1]


def test_a_colliding_plugin_fails_the_kit(fake_dist: FakeDist) -> None:
    fake_dist(
        "zoo-copycat",
        "import zoo\n@zoo.hookimpl\ndef register_datasets(register):\n"
        "    register(zoo.Dataset(name='mnist', loader='x:y', summary='', classes=('a', 'b'), shape=(1, 8, 8),"
        " mean=(0.5,), std=(0.5,), train_size=1, test_size=1))\n",
    )
    with pytest.warns(UserWarning, match="already provides it"):
        findings = check("zoo-copycat")
    names = next(f for f in findings if f.check == "everything it registers is accepted")
    assert not names.ok and "zoo-classifiers 0.1.0 already provides it" in names.detail


BAD_FORMATS = """
import json

import numpy as np
import torch
import zoo


def write_junk(model, example, meta, path, opset):
    path.write_bytes(b"not a model")


def run_junk(path):
    return (lambda x: np.zeros((len(x), 10), dtype=np.float32)), {}


def write_fuzzy(model, example, meta, path, opset):
    torch.save({"model": model, "meta": meta}, path)


def run_fuzzy(path):
    saved = torch.load(path, weights_only=False)
    def run(x):
        with torch.no_grad():
            return saved["model"](torch.from_numpy(x)).numpy() * (1 + 1e-4)  # about 840 float32 rounding steps
    return run, saved["meta"]


@zoo.hookimpl
def register_exporters(register):
    register(zoo.Exporter(name="junk", suffix=".junk", writer=write_junk, runner=run_junk, summary="broken"))
    register(zoo.Exporter(name="fuzzy", suffix=".fuzzy", writer=write_fuzzy, runner=run_fuzzy, summary="imprecise"))
"""


def test_a_plugin_of_export_formats_is_proved_on_built_in_architectures(fake_dist: FakeDist) -> None:
    fake_dist("zoo-bad-formats", BAD_FORMATS)
    findings = check("zoo-bad-formats")
    junk = [f for f in findings if f.subject == "export format junk"]
    assert [(f.check, f.status) for f in junk[:1]] == [("writer and runner import", "passed")]
    junk = junk[1:]
    assert [f.check for f in junk] == [
        "round trip of untrained mnist_cnn6_16 with parity",
        "round trip of untrained lenet_bn with parity",
    ]
    assert all(f.status == "failed" and "runner does not give back the metadata" in f.detail for f in junk)
    assert all(tempfile.gettempdir() not in f.detail and "manifest.json" not in f.detail for f in junk)
    assert "fix the writer" not in junk[0].detail and "the runner must load what the writer wrote" in junk[0].detail

    # A tolerance miss says how far off, and how to allow more; not how to write forward.
    fuzzy = next(f for f in findings if f.subject == "export format fuzzy" and f.check.startswith("round trip"))
    assert fuzzy.status == "failed" and "float32 rounding steps, 128 allowed" in fuzzy.detail
    assert "--ulps fuzzy=N" in fuzzy.detail and "data-dependent" not in fuzzy.detail
    loose = check("zoo-bad-formats", tolerances={"fuzzy": 5000})
    assert all(f.status == "passed" for f in loose if f.subject == "export format fuzzy")

    result = CliRunner().invoke(cli, ["check", "zoo-bad-formats"])
    assert result.exit_code == 1 and result.output.splitlines()[-1] == "4 passed, 4 failed, 0 skipped"
    loose_cli = CliRunner().invoke(cli, ["check", "zoo-bad-formats", "--ulps", "fuzzy=5000"])
    assert loose_cli.output.splitlines()[-1] == "6 passed, 2 failed, 0 skipped"
    bad = CliRunner().invoke(cli, ["check", "zoo-bad-formats", "--ulps", "fuzzy"])
    assert bad.exit_code == 1 and "--ulps takes FORMAT=N" in bad.stderr
    with pytest.raises(ZooError, match="unknown export format 'fuzy'"):
        check("zoo-bad-formats", tolerances={"fuzy": 1})


DEAD_NETS = """
import zoo
from torch import nn


class Dead(nn.Module):
    def __init__(self, input_shape=(1, 28, 28), num_classes=10):
        super().__init__()
        c, h, w = input_shape
        self.linear = nn.Linear(c * h * w, num_classes)
        self.unused = nn.Linear(c * h * w, num_classes)  # built, never called

    def forward(self, x):
        return self.linear(x.flatten(1))


def broken(input_shape=(1, 28, 28), num_classes=10):
    raise TypeError("builder() got an unexpected keyword argument 'num_classes'")


@zoo.hookimpl
def register_architectures(register):
    register(zoo.Architecture(name="dead", builder=Dead, summary="a layer forward never uses"))
    register(zoo.Architecture(name="broken", builder=broken, summary="does not build"))
"""


def test_parameters_without_gradients_are_named(fake_dist: FakeDist) -> None:
    fake_dist("zoo-dead-nets", DEAD_NETS)
    findings = {f.check: f for f in check("dead")}
    assert findings["ten training steps on a fixed batch lower the loss"].status == "passed"
    gradients = findings["every parameter gets finite gradients and changes within 3 steps"]
    assert gradients.status == "failed" and "no gradient reaches unused.weight, unused.bias;" in gradients.detail
    assert "linear.weight" not in gradients.detail


def test_one_root_cause_fails_once(fake_dist: FakeDist) -> None:
    fake_dist("zoo-dead-nets", DEAD_NETS)
    findings = check("broken")
    failed = [f for f in findings if f.status == "failed"]
    assert [f.check for f in failed] == ["builds (1x28x28, 10 classes)"]
    assert "TypeError: builder() got an unexpected keyword argument" in failed[0].detail
    skipped = [f for f in findings if f.status == "skipped"]
    assert len(skipped) >= 10 and {f.detail for f in skipped} == {"not run: builds (1x28x28, 10 classes) failed"}
    assert "exports to onnx with parity" in {f.check for f in skipped}


MISSING_DATA = """
import torch
import zoo


def absent(split, root, download):
    raise zoo.DatasetNotFound(f"put the files in {root}")


def floats(split, root, download):
    return torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)


def typo(split, root, download):
    return torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.zeros(4).lng()


@zoo.hookimpl
def register_datasets(register):
    for name, loader in (("absent", absent), ("floats", floats), ("typo", typo)):
        register(zoo.Dataset(name=name, loader=loader, summary="", classes=("a", "b"), shape=(1, 8, 8),
                             mean=(0.5,), std=(0.5,), train_size=4, test_size=4))
"""


def test_skipped_checks_are_counted_apart_and_fail_when_strict(fake_dist: FakeDist) -> None:
    fake_dist("zoo-missing-data", MISSING_DATA)
    findings = {f.check: f for f in check("absent")}
    assert findings["test split loads"].status == "skipped" and "files not here" in findings["test split loads"].detail
    assert findings["test split size matches test_size"].detail == "not run: test split loads skipped"
    assert_conforms("absent")
    with pytest.raises(AssertionError, match="3 passed, 0 failed, 2 skipped"):
        assert_conforms("absent", strict=True)

    result = CliRunner().invoke(cli, ["check", "absent"])
    assert result.exit_code == 0 and result.output.splitlines()[-1] == "3 passed, 0 failed, 2 skipped"
    assert "skip  data set absent: test split loads — files not here (put the files in" in result.output
    strict = CliRunner().invoke(cli, ["check", "absent", "--strict"])
    assert strict.exit_code == 1 and "FAIL  data set absent: test split loads" in strict.output


def test_a_loader_that_raises_anything_else_fails(fake_dist: FakeDist) -> None:
    fake_dist("zoo-missing-data", MISSING_DATA)
    floats = next(f for f in check("floats") if f.check == "test split loads")
    assert floats.status == "failed" and "loader returned torch.float32 images" in floats.detail
    typo = next(f for f in check("typo") if f.check == "test split loads")
    assert typo.status == "failed" and typo.detail.startswith("AttributeError:") and "fix the loader" in typo.detail


@pytest.mark.slow
def test_cases_are_lazy_and_separate_pytest_items(
    fake_dist: FakeDist, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = fake_dist("zoo-bad-nets", BAD_NETS)

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("collecting the cases built a model")

    with monkeypatch.context() as m:
        m.setattr(Architecture, "build", boom)
        found = cases("zoo-bad-nets")
    assert "architecture frozen: ten training steps on a fixed batch lower the loss" in map(str, found)

    (tmp_path / "test_kit.py").write_text(
        "import pytest\nfrom zoo import testing\n\n\n"
        '@pytest.mark.parametrize("case", testing.cases("zoo-bad-nets"), ids=str)\n'
        "def test_conforms(case):\n    case.assert_passes()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-k", "frozen", "test_kit.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    lines = run.stdout.splitlines()
    outcomes = dict(line.rsplit("] ", 1) for line in lines if line.startswith("test_kit.py::test_conforms["))
    outcomes = {
        item.removeprefix("test_kit.py::test_conforms[architecture frozen: "): result.split()[0]
        for item, result in outcomes.items()
    }
    assert outcomes["metadata"] == "PASSED" and outcomes["exports to onnx with parity"] == "PASSED"
    assert outcomes["ten training steps on a fixed batch lower the loss"] == "FAILED"
    assert outcomes["every parameter gets finite gradients and changes within 3 steps"] == "FAILED"
    frozen = sum("architecture frozen:" in str(case) for case in found)  # one item per check, however many data sets
    assert len(outcomes) == frozen and run.returncode == 1 and f"2 failed, {frozen - 2} passed" in lines[-1]


@pytest.mark.slow
def test_the_scaffold_installs_and_passes_its_own_tests(tmp_path: Path) -> None:
    root = tmp_path / "zoo-scaffolded"
    result = CliRunner().invoke(cli, ["new-plugin", "scaffolded", "--dir", str(root)])
    assert result.exit_code == 0 and "pip install -e" in result.output
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--no-build-isolation", "--no-deps", "-e", str(root)], check=True,
                   capture_output=True)  # fmt: skip
    try:
        # The scaffold's README, as its author follows it: train, publish into the package, use the command.
        for command in (["train", "scaffolded_net", "scaffolded_blobs", "--epochs", "1", "--out", "runs/first"],
                        ["publish", "runs/first", "--tag", "blobs", "--out", "zoo_scaffolded/weights"],
                        ["scaffolded-samples", "--count", "2"]):  # fmt: skip
            done = subprocess.run([sys.executable, "-m", "zoo", *command], capture_output=True, text=True, cwd=root)
            assert done.returncode == 0, done.stderr
        assert len(list((root / "scaffolded-samples").glob("*.png"))) == 2
        checked = subprocess.run([sys.executable, "-m", "zoo", "check", "zoo-scaffolded", "--strict"],
                                 capture_output=True, text=True, cwd=root)  # fmt: skip
        assert checked.returncode == 0, checked.stdout + checked.stderr
        for passed in ("weights scaffolded_net:blobs: reproduces the recorded accuracy",
                       "command zoo scaffolded-samples: --help runs"):  # fmt: skip
            assert f"ok    {passed}" in checked.stdout
        tests = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
            capture_output=True,
            text=True,
            cwd=root,
            check=False,
        )
        assert tests.returncode == 0, tests.stdout + tests.stderr
        assert " passed" in tests.stdout and "failed" not in tests.stdout
    finally:
        subprocess.run([*pip, "uninstall", "-y", "zoo-scaffolded"], check=True, capture_output=True)
    again = CliRunner().invoke(cli, ["new-plugin", "scaffolded", "--dir", str(root)])
    assert again.exit_code == 1 and "already exists" in again.stderr
    bad = CliRunner().invoke(cli, ["new-plugin", "My-Nets", "--dir", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "must be lower case" in bad.stderr


ZERO_INIT = """
import torch
from torch import nn

import zoo


class Residual(nn.Module):
    \"\"\"A residual network whose branches end in a batch norm with its scale zeroed, as torchvision's
    zero_init_residual and timm's zero_init_last do: at the first step no gradient reaches the convolutions
    inside the branch.\"\"\"

    def __init__(self, input_shape=(1, 28, 28), num_classes=10):
        super().__init__()
        self.stem = nn.Conv2d(input_shape[0], 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        nn.init.zeros_(self.norm.weight)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.norm(self.conv1(x)))
        return self.head(x.mean((2, 3)))


class Stuck(Residual):
    \"\"\"The same, with the branch multiplied by a constant zero: it never learns.\"\"\"

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(x + 0.0 * self.norm(self.conv1(x)))
        return self.head(x.mean((2, 3)))


@zoo.hookimpl
def register_architectures(register):
    register(zoo.Architecture(name="zero_init", builder=Residual, summary="zero-initialised residual branch"))
    register(zoo.Architecture(name="stuck", builder=Stuck, summary="a branch multiplied by zero"))
"""

GRADIENTS = "every parameter gets finite gradients and changes within 3 steps"


def test_a_zero_initialised_residual_branch_passes_and_a_branch_that_never_learns_fails(fake_dist: FakeDist) -> None:
    fake_dist("zoo-zero-init", ZERO_INIT)
    passed = {f.check: f for f in check("zero_init")}[GRADIENTS]
    assert passed.status == "passed", passed.detail
    failed = {f.check: f for f in check("stuck")}[GRADIENTS]
    assert failed.status == "failed" and failed.detail.startswith("conv1.weight, conv1.bias, norm.weight, norm.bias "
                                                                   "did not change in 3 optimizer steps")  # fmt: skip


TAMPERED = """
import json
from importlib.resources import files

import zoo

RECORD = json.loads(files("zoo.plugins").joinpath("weights/mnist_cnn6_16-mnist.json").read_text())
RECORD["file"] = "zoo.plugins:weights/mnist_cnn6_16-mnist.safetensors"  # the built-in's file, under other records


@zoo.hookimpl
def register_weights(register):
    register(zoo.Weights.from_json(RECORD, tag="wrong_sha", sha256="0" * 64))
    register(zoo.Weights.from_json(RECORD, tag="wrong_params", params=RECORD["params"] + 1))
"""


def test_the_kit_verifies_every_weights_record_of_a_plugin(fake_dist: FakeDist) -> None:
    fake_dist("zoo-tampered", TAMPERED)
    findings = {f"{f.subject}: {f.check}": f for f in check("zoo-tampered")}
    sha = findings["weights mnist_cnn6_16:wrong_sha: file present, with the recorded sha256 and size"]
    assert sha.status == "failed" and "the record says 0000" in sha.detail
    params = findings["weights mnist_cnn6_16:wrong_params: file matches the record and the architecture"]
    assert params.status == "failed" and "has 60,074 trainable parameters, the record says 60,075" in params.detail
    assert findings["weights mnist_cnn6_16:wrong_params: file present, with the recorded sha256 and size"].ok
