"""The distribution: what the sdist and the wheel carry, and the `zoo` entry points they declare."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_sdist_and_wheel_contents(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (sdist,) = tmp_path.glob("zoo_classifiers-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"README.md", "LICENSE", "pyproject.toml", "MANIFEST.in", "tests/conftest.py", "tests/test_cli.py"} <= names
    assert "plugins/nets.py" in names and not any("__pycache__" in n for n in names)

    (wheel,) = tmp_path.glob("zoo_classifiers-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        files = whl.namelist()
        (entry_points,) = [n for n in files if n.endswith(".dist-info/entry_points.txt")]
        declared = whl.read(entry_points).decode()
    # The built-ins install under zoo's own name: zoo claims no generic top-level import names.
    assert {f.split("/")[0] for f in files if not f.startswith("zoo_classifiers-")} == {"zoo"}
    assert {"zoo/plugins/nets.py", "zoo/exporters/formats.py"} <= set(files)
    # The published weights ship as package data, each file with its record, in the sdist and in the wheel.
    shipped = {p.name for p in (ROOT / "plugins" / "weights").iterdir() if p.suffix in (".safetensors", ".json")}
    assert len(shipped) >= 10
    assert {f"zoo/plugins/weights/{n}" for n in shipped} <= set(files)
    assert {f"plugins/weights/{n}" for n in shipped} <= names
    assert (
        "[zoo]\narchitectures = zoo.plugins.architectures\ndatasets = zoo.plugins.datasets\n"
        "formats = zoo.exporters.formats\nruntimes = zoo.exporters.runtimes\n"
        "weights = zoo.plugins.pretrained" in declared
    )
    assert "[console_scripts]\nzoo = zoo.cli:main" in declared
