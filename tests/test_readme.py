"""The README and docs work as written: CI runs the quick start verbatim, and every command and code block runs."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from PIL import Image

from zoo.loader import load_registry

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SHARED_DATA = ROOT.parent / "shared" / "datasets"
ZOO = Path(sys.executable).with_name("zoo")


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def section(heading: str) -> str:
    return README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


QUICK_START, TESTS = (b.strip() for b in blocks(section("Quick start"), "bash"))
COMMANDS = [line for line in blocks(section("Commands"), "bash")[0].splitlines() if line.strip()]
PYTHON_BLOCKS = [
    (path.name, code)
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    if path.name != "serving.md"  # its blocks talk to a server: tests/test_serve.py runs them against one
    for code in blocks(path.read_text(), "python")
]


def test_ci_runs_the_readme_commands_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert TESTS in ci, "CI must run the README's test command"
    assert QUICK_START in ci, "CI must run the README's quick start"
    assert ci.index(QUICK_START) > ci.index(TESTS), "the quick start runs after the tests, in the same venv"


def test_readme_is_at_most_12_kb() -> None:
    """The README is for a newcomer; the reference is in docs/."""
    assert len((ROOT / "README.md").read_bytes()) <= 12 * 1024


def test_the_docs_repeat_the_quick_start_and_the_commands_verbatim() -> None:
    home, cli = ((ROOT / "docs" / name).read_text() for name in ("index.md", "cli.md"))
    assert [b.strip() for b in blocks(home, "bash")[:2]] == [QUICK_START, TESTS]
    assert blocks(cli, "bash")[0] == blocks(section("Commands"), "bash")[0]


def write_digit(path: Path) -> None:
    images, _ = load_registry().datasets["sevenseg"].load("test", path.parent)
    Image.fromarray(images[0, 0].numpy()).save(path)


@pytest.fixture(scope="module")
def quick_start(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where the quick start's zoo commands ran, as a newcomer runs them, and a digit.png."""
    cwd = tmp_path_factory.mktemp("newcomer")
    (cwd / "docs").mkdir()
    shutil.copyfile(ROOT / "docs" / "seven.png", cwd / "docs" / "seven.png")  # the quick start's picture
    for command in QUICK_START.split(" && ")[2:]:  # after making and filling the venv, which this one is
        args = shlex.split(command)
        assert args[0] == ".venv/bin/zoo"
        subprocess.run([str(ZOO), *args[1:]], cwd=cwd, check=True, capture_output=True)
    write_digit(cwd / "digit.png")
    return cwd


def needs(command: str) -> str | None:
    """Why a README command cannot run here, or None; `zoo export ARCH` needs what the last `zoo train ARCH` did."""
    if "downloads" in command.partition("#")[2]:
        return "downloads a data set"
    if "../shared/datasets" in command and not SHARED_DATA.is_dir():
        return f"{SHARED_DATA} is not here"
    trainer = trainer_of(command)
    return needs(trainer) if trainer else None


def trainer_of(command: str) -> str | None:
    """The README's `zoo train ARCH` before a `zoo export ARCH`, whose run that export takes."""
    words = command.split()
    if words[1] != "export" or "/" in words[2]:
        return None
    trainers = [c for c in COMMANDS[: COMMANDS.index(command)] if c.split()[1:3] == ["train", words[2]]]
    return trainers[-1] if trainers else None


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=[c.partition("#")[0].strip() for c in COMMANDS])
def test_every_readme_command_runs(command: str, quick_start: Path) -> None:
    if reason := needs(command):
        pytest.skip(reason)
    trainer = trainer_of(command)
    if trainer and not list((quick_start / "runs").glob(f"*{command.split()[2]}*")):
        run_readme_command(trainer, quick_start)  # ran elsewhere (the tests run in parallel), or not yet
    run_readme_command(command, quick_start)


def run_readme_command(command: str, quick_start: Path) -> None:
    run = min((quick_start / "runs").glob("lenet_bn-sevenseg-*"))  # the quick start's: names end in their time
    line = command.partition("#")[0].replace("runs/<run>", str(run.relative_to(quick_start)))
    args = shlex.split(line.replace("../shared/datasets", str(SHARED_DATA)))
    assert args[0] == "zoo"
    result = subprocess.run([str(ZOO), *args[1:]], cwd=quick_start, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "warning" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "code", [c for _, c in PYTHON_BLOCKS], ids=[f"{n}-{i}" for i, (n, _) in enumerate(PYTHON_BLOCKS)]
)
def test_every_python_block_runs(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each block runs as written; a block defining hooks is then called, and what it registers must be valid."""
    import zoo

    monkeypatch.chdir(tmp_path)
    write_digit(tmp_path / "digit.png")
    namespace: dict[str, object] = {}
    code = code.replace('"zoo-mynets"', '"zoo-classifiers"')  # the docs' example plugin is not installed here
    exec(compile(code, "<block>", "exec"), namespace)
    kinds = {
        "register_architectures": zoo.Architecture,
        "register_datasets": zoo.Dataset,
        "register_exporters": zoo.Exporter,
        "register_weights": zoo.Weights,
        "register_commands": click.Command,
    }
    for hook, kind in kinds.items():
        if hook in namespace:
            registered: list[object] = []
            namespace[hook](registered.append)  # type: ignore[operator]
            assert registered and all(isinstance(item, kind) for item in registered)
            for item in registered:
                if isinstance(item, zoo.Dataset):
                    images, labels = item.load("test", tmp_path)  # checks the shape and type it declares
                    assert len(images) == item.test_size and int(labels.max()) < item.num_classes


def test_readme_commands_are_zoo_commands_and_one_alone_needs_a_download() -> None:
    assert all(c.startswith("zoo ") for c in COMMANDS)
    assert [needs(c) for c in COMMANDS].count("downloads a data set") == 1
