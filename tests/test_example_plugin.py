"""A real third-party plugin, pip-installed: listed, trained in both directions, exported, checked, uninstalled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent / "example_plugin"


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True,
                   capture_output=True)  # fmt: skip


def zoo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          check=False)  # fmt: skip


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    # No network and no build isolation: the package builds with the setuptools already here.
    pip("install", "--no-build-isolation", "--no-deps", str(PACKAGE))
    try:
        yield
    finally:
        pip("uninstall", "-y", "zoo-example-mlp")


@pytest.mark.slow
def test_a_pip_installed_plugin_works_end_to_end(installed: None, tmp_path: Path) -> None:
    listed = zoo("list", "--json", cwd=tmp_path)
    data = json.loads(listed.stdout)
    mlp = next(a for a in data["architectures"] if a["name"] == "tiny_mlp")
    assert mlp["provider"] == {"distribution": "zoo-example-mlp", "version": "0.3.0", "plugin": "example_mlp"}
    assert any(d["name"] == "stripes" for d in data["datasets"])
    plugins = zoo("plugins", "--strict", cwd=tmp_path)
    assert plugins.returncode == 0, plugins.stdout
    row = next(line for line in plugins.stdout.splitlines() if line.startswith("example_mlp "))
    assert row.split()[1:4] == ["zoo-example-mlp", "0.3.0", "loaded"]
    assert all(provided in row for provided in ("architecture tiny_mlp", "data set stripes", "command stripes"))
    assert "  stripes  " in zoo("--help", cwd=tmp_path).stdout  # the plugin's command, beside zoo's own
    counted = zoo("stripes", "train", cwd=tmp_path)
    assert counted.returncode == 0 and counted.stdout.splitlines()[0].startswith("horizontal: ")
    assert sum(int(line.split(": ")[1]) for line in counted.stdout.splitlines()) == 2000

    mine_on_builtin = zoo(
        "train", "tiny", "sevenseg", "--epochs", "1", "--limit", "1000", "--out", "a", "-q", cwd=tmp_path
    )
    assert mine_on_builtin.returncode == 0, mine_on_builtin.stderr
    builtin_on_mine = zoo("train", "cnn6", "stripes", "--epochs", "2", "--out", "b", "-q", "--json", cwd=tmp_path)
    assert builtin_on_mine.returncode == 0, builtin_on_mine.stderr
    assert json.loads(builtin_on_mine.stdout)["test_accuracy"] > 0.9, "stripes are easy"

    exported = zoo("export", "a", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert {p.name for p in (tmp_path / "a" / "export").iterdir()} >= {"tiny_mlp.onnx", "tiny_mlp.pt2"}
    checked = zoo("check", "zoo-example-mlp", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout
    assert " 0 failed" in checked.stdout


@pytest.mark.slow
def test_after_uninstall_the_plugin_is_gone(tmp_path: Path) -> None:
    pip("install", "--no-build-isolation", "--no-deps", str(PACKAGE))
    pip("uninstall", "-y", "zoo-example-mlp")
    assert "tiny_mlp" not in zoo("list", cwd=tmp_path).stdout
    result = zoo("info", "tiny_mlp", cwd=tmp_path)
    assert result.returncode == 1 and "unknown name 'tiny_mlp'" in result.stderr
