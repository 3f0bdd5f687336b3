"""What zoo is handed decides nothing beyond itself: publish and export write only under the names they were given
and never replace what is not theirs, and a run folder from someone else is read within bounds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from zoo.cli import cli
from zoo.files import KILL_AT_WRITE_ENV, sha256
from zoo.loader import get_registry
from zoo.weights import fetch


def zoo_cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def one_line_error(result: Result, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, (
        result.stderr
    )


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of mnist_cnn6_16 on seven-segment digits (a few steps)."""
    run = tmp_path_factory.mktemp("handoffs") / "run"
    args = ["train", "cnn6", "sevenseg", "--epochs", "1", "--max-steps", "5", "--out", str(run), "--quiet"]
    trained = zoo_cli(*args)
    assert trained.exit_code == 0, trained.output
    return run


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> Path:
    """A copy of the finished run, to change or to publish from."""
    copy = tmp_path / "work" / "run"
    shutil.copytree(finished, copy)
    return copy


@pytest.mark.parametrize(
    ("tag", "message"),
    [("x/../../../victim", "--tag 'x/../../../victim': weights tag name"), ("V1.0", "--tag 'V1.0': weights tag")],
)
def test_publish_checks_the_tag_before_writing_anything(run: Path, tmp_path: Path, tag: str, message: str) -> None:
    before = tree(tmp_path)
    result = zoo_cli("publish", str(run), "--tag", tag, "--out", str(tmp_path / "work" / "out" / "a" / "b"))
    one_line_error(result, message)
    assert tree(tmp_path) == before, "nothing written anywhere"


def test_publish_replaces_published_weights_only_with_force(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "weights"
    assert zoo_cli("publish", str(run), "--tag", "tiny", "--out", str(out)).exit_code == 0
    record = (out / "mnist_cnn6_16-tiny.json").read_text()
    again = zoo_cli("publish", str(run), "--tag", "tiny", "--out", str(out))
    one_line_error(again, "already exist; pass --force to replace them")
    assert (out / "mnist_cnn6_16-tiny.json").read_text() == record
    forced = zoo_cli("publish", str(run), "--tag", "tiny", "--out", str(out), "--force")
    assert forced.exit_code == 0, forced.output
    assert json.loads((out / "mnist_cnn6_16-tiny.json").read_text())["sha256"] == sha256(
        out / "mnist_cnn6_16-tiny.safetensors"
    )


@pytest.mark.slow
def test_publish_killed_at_any_write_never_leaves_a_record_beside_another_file(run: Path, tmp_path: Path) -> None:
    """SIGKILL at each write of a ``--force`` publish over earlier weights: the record and the file it names
    stay a pair (the old one, or the new one, or no record at all, which registers nothing)."""
    out = tmp_path / "weights"
    old = zoo_cli("publish", str(run), "--tag", "tiny", "--out", str(out))
    assert old.exit_code == 0, old.output
    other = tmp_path / "other"  # the same run trained one step longer: other weights
    args = ["train", "cnn6", "sevenseg", "--epochs", "1", "--max-steps", "6", "--out", str(other), "--quiet"]
    assert zoo_cli(*args).exit_code == 0
    command = [sys.executable, "-m", "zoo", "publish", str(other), "--tag", "tiny", "--out", str(out), "--force"]
    for n in range(1, 20):
        killed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, KILL_AT_WRITE_ENV: str(n)})
        record = out / "mnist_cnn6_16-tiny.json"
        if record.exists():
            assert json.loads(record.read_text())["sha256"] == sha256(out / "mnist_cnn6_16-tiny.safetensors"), n
        if killed.returncode == 0:
            assert n > 4, "killed at each of the evaluation's files, the weights and the record"
            break
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        shutil.rmtree(other / "eval-tiny", ignore_errors=True)
    else:
        pytest.fail("publish never finished")


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ('{"name": "my web app", "icons": []}', "is not a manifest zoo wrote, and zoo will not replace it"),
        ("[1, 2]", "is not a manifest zoo wrote"),
        ("{not json", "is not valid JSON"),
        ("[" * 200_000, "is not valid JSON"),
    ],
    ids=["web-app", "list", "not-json", "deeply-nested"],
)
def test_export_never_replaces_a_manifest_zoo_did_not_write(
    run: Path, tmp_path: Path, manifest: str, message: str
) -> None:
    out = tmp_path / "site"
    out.mkdir()
    (out / "manifest.json").write_text(manifest)
    result = zoo_cli("export", str(run), "--onnx", "--out", str(out))
    one_line_error(result, message)
    assert tree(out) == ["manifest.json"] and (out / "manifest.json").read_text() == manifest


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["device", "fifo", "huge"])
def test_a_handed_run_folder_is_read_within_bounds(run: Path, kind: str) -> None:
    """config.json linked to /dev/zero, a FIFO or a 2 MB file (a FIFO would block a read, /dev/zero fill memory):
    the weights still export, and resuming the run says in one line what is wrong with it, at once."""
    config = run / "config.json"
    config.unlink()
    if kind == "device":
        config.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(config)
    else:
        config.write_text(json.dumps({"pad": "x" * 2_000_000}))
    zoo = [sys.executable, "-m", "zoo"]
    exported = subprocess.run([*zoo, "export", str(run), "--onnx", "--out", str(run.parent / "out")],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert exported.returncode == 0 and (run.parent / "out" / "manifest.json").is_file(), exported.stderr
    resumed = subprocess.run([*zoo, "train", "--resume", str(run)], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 1 and resumed.stderr.count("\n") == 1, resumed.stderr
    assert f"{config}" in resumed.stderr and "start the run again" in resumed.stderr, resumed.stderr


def test_a_recorded_data_dir_is_read_but_never_written(
    idx_root: Callable[[str, int], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run folder naming a data directory without the data does not make zoo download into it."""
    run, recorded = tmp_path / "handed", tmp_path / "their-place"
    run.mkdir()
    recorded.mkdir()
    shutil.copyfile(fetch(get_registry().weights["mnist_cnn6_16:mnist"]), run / "best.safetensors")
    (run / "config.json").write_text(json.dumps({"train": {}, "data_dir": str(recorded)}))
    monkeypatch.setenv("ZOO_DATA_DIR", str(idx_root("MNIST", 20)))  # where this user keeps MNIST
    result = zoo_cli("eval", str(run), "--out", str(tmp_path / "eval"))
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.stdout and tree(recorded) == []


@pytest.mark.parametrize("command", ["eval", "publish", "bench"])
def test_an_output_folder_that_cannot_be_written_is_named_before_any_work(run: Path, command: str) -> None:
    """/sys, where even root cannot make a file: "unexpected OSError" before, after all the work for bench --plot."""
    args = {
        "eval": ["eval", str(run), "sevenseg", "--out", "/sys"],
        "publish": ["publish", str(run), "--out", "/sys"],
        "bench": ["bench", str(run), "--formats", "eager", "--rounds", "1", "--plot", "/sys/speeds.png"],
    }[command]
    before = tree(run)
    one_line_error(zoo_cli(*args), "cannot write to /sys (")
    assert tree(run) == before
