"""The conformance kit (`zoo check`, `zoo.testing`): the built-ins pass it, and broken plugins are told why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import FakeDist

from zoo.cli import cli
from zoo.loader import load_registry
from zoo.testing import assert_conforms, check

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
    assert not ignores.ok and "output shape (2, 10), expected (2, 3)" in ignores.detail
    assert "the builder must honour input_shape and num_classes" in ignores.detail
    frozen = findings[("architecture frozen", "ten training steps on a fixed batch lower the loss")]
    assert not frozen.ok and "check that forward uses every layer" in frozen.detail

    result = CliRunner().invoke(cli, ["check", "zoo-bad-nets"])
    assert result.exit_code == 1
    assert "FAIL  architecture frozen: ten training steps on a fixed batch lower the loss" in result.output
    assert result.output.rstrip().endswith("failed") and " 0 failed" not in result.output


def test_a_colliding_plugin_fails_the_kit(fake_dist: FakeDist) -> None:
    fake_dist(
        "zoo-copycat",
        "import zoo\n@zoo.hookimpl\ndef register_datasets(register):\n"
        "    register(zoo.Dataset(name='mnist', loader='x:y', summary='', classes=('a', 'b'), shape=(1, 8, 8),"
        " mean=(0.5,), std=(0.5,), train_size=1, test_size=1))\n",
    )
    with pytest.warns(UserWarning, match="already provides it"):
        findings = check("zoo-copycat")
    names = next(f for f in findings if f.check == "names are its own")
    assert not names.ok and "zoo-classifiers 0.1.0 already provides it" in names.detail


@pytest.mark.slow
def test_the_scaffold_installs_and_passes_its_own_tests(tmp_path: Path) -> None:
    root = tmp_path / "zoo-scaffolded"
    result = CliRunner().invoke(cli, ["new-plugin", "scaffolded", "--dir", str(root)])
    assert result.exit_code == 0 and "pip install -e" in result.output
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--no-build-isolation", "--no-deps", str(root)], check=True, capture_output=True)
    try:
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
                               capture_output=True, text=True, cwd=root, check=False)  # fmt: skip
        assert tests.returncode == 0, tests.stdout + tests.stderr
        assert "1 passed" in tests.stdout
    finally:
        subprocess.run([*pip, "uninstall", "-y", "zoo-scaffolded"], check=True, capture_output=True)
    again = CliRunner().invoke(cli, ["new-plugin", "scaffolded", "--dir", str(root)])
    assert again.exit_code == 1 and "already exists" in again.stderr
    bad = CliRunner().invoke(cli, ["new-plugin", "My-Nets", "--dir", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "must be lower case" in bad.stderr
