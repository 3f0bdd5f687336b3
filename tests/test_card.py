"""The model card: one typed record that every file carries, read back the same from every format."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from conftest import FakeDist
from hypothesis import given
from hypothesis import strategies as st

from zoo import checkpoint
from zoo.card import ModelCard, Provider, decode, encode, new_card
from zoo.cli import cli
from zoo.errors import ZooError
from zoo.loader import get_registry

CARD = ModelCard(
    architecture="mnist_cnn6_16",
    classes=tuple("0123456789"),
    input_shape=(1, 28, 28),
    mean=(0.1307,),
    std=(0.3081,),
    dataset="mnist",
    provider=Provider("zoo-classifiers", "0.1.0"),
    config={"epochs": 3, "lr": 0.001, "augment": "none"},
    epoch=3,
    metrics={"val_acc": 0.98, "val_loss": None},
    zoo_version="0.1.0",
    torch_version="2.14.1+cu128",
    opset=17,
)


def zoo(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


names = st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Zs"]), min_size=1, max_size=20).filter(
    str.isprintable
)


@given(
    classes=st.lists(names, min_size=2, max_size=12, unique=True),
    dataset=st.one_of(st.none(), names.filter(lambda n: n.strip() == n)),
    channels=st.integers(1, 4),
    trained=st.booleans(),
)
def test_a_card_survives_its_json_and_the_string_metadata_of_a_file(
    classes: list[str], dataset: str | None, channels: int, trained: bool
) -> None:
    card = replace(
        CARD,
        classes=tuple(classes),
        dataset=dataset,
        input_shape=(channels, 32, 32),
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
        trained=trained,
    )
    assert ModelCard.from_json(card.to_json(), "x") == card
    stored = encode(card.to_json())
    assert all(isinstance(v, str) for v in stored.values())
    again = ModelCard.from_json(decode(stored, "x"), "x")
    assert again == card and again.to_json() == card.to_json()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"provider": "zoo-classifiers"}, "provider must be {distribution, version}"),
        ({"provider": {"distribution": "a b", "version": "1"}}, "provider distribution must be a name"),
        ({"trained": "yes"}, "trained must be true or false"),
        ({"epoch": -1}, "epoch must be an integer from 0"),
        ({"config": [1, 2]}, "config must be a JSON object"),
        ({"opset": 17.5}, "opset must be an integer"),
        ({"zoo_version": "0.1\n; rm -rf"}, "zoo_version must be a name or version"),
    ],
)
def test_each_field_is_checked_and_named(change: dict[str, object], message: str) -> None:
    with pytest.raises(ZooError, match=r"^model\.safetensors has invalid zoo metadata: ") as caught:
        ModelCard.from_json({**CARD.to_json(), **change}, "model.safetensors")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_keys_are_ignored_and_older_files_still_read() -> None:
    older = {k: v for k, v in CARD.to_json().items() if k not in ("provider", "trained", "opset")}
    card = ModelCard.from_json({**older, "format": "zoo.checkpoint", "added_later": [1]}, "x")
    assert card.provider is None and card.trained and card.architecture == CARD.architecture


def test_training_writes_the_card_and_keeps_resume_state_apart(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = zoo("train", "cnn6", "sevenseg", "--epochs", "1", "--limit", "128", "--out", str(run), "--quiet")
    assert result.exit_code == 0, result.output
    best, last = checkpoint.load(run / "best.safetensors"), checkpoint.load(run / "last.safetensors")
    assert best.card == last.card and best.card.provider == Provider("zoo-classifiers", "0.1.0")
    assert best.card.config["epochs"] == 1 and best.card.metrics["epoch"] == 1 and best.resume is None
    assert last.resume is not None and set(last.resume) == {"history", "progress"}
    assert "history" not in best.card.to_json() and "history" not in last.card.to_json()


def test_every_format_carries_the_same_card(tmp_path: Path) -> None:
    result = zoo("export", "cnn6", "--untrained", "--onnx", "--safetensors", "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    card = checkpoint.load(tmp_path / "mnist_cnn6_16-untrained.safetensors").card
    assert not card.trained and card.opset == 17 and card.provider == Provider("zoo-classifiers", "0.1.0")
    registry = get_registry()
    _, meta = registry.exporter("onnx").load(tmp_path / "mnist_cnn6_16-untrained.onnx")
    # values that are not set are left out of an ONNX file's metadata, not written as "null"
    assert ModelCard.from_json(meta, "onnx") == card and meta == {
        **{k: v for k, v in card.to_json().items() if v is not None},
        "export": meta["export"],
    }
    assert checkpoint.load(tmp_path / "mnist_cnn6_16-untrained.safetensors").export == {**meta["export"],
        "format": "safetensors", "proof": {"policy": "exact"}}  # fmt: skip
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert ModelCard.from_json(manifest, "manifest") == card


STRINGLY = """
import zoo
from zoo.exporters import formats


def run(path):
    run, meta = formats.run_onnx(path)
    return run, {k: v if isinstance(v, str) else __import__("json").dumps(v) for k, v in meta.items()}


@zoo.hookimpl
def register_exporters(register):
    register(zoo.Exporter(name="stringly", suffix=".stringly.onnx", writer=formats.write_onnx, runner=run,
                          summary="ONNX whose runner returns every value as a string"))
"""


def test_a_runner_that_changes_the_metadata_fails_the_export(fake_dist: FakeDist, tmp_path: Path) -> None:
    fake_dist("zoo-stringly", STRINGLY)
    result = zoo("export", "cnn6", "--untrained", "--format", "stringly", "--out", str(tmp_path))
    assert result.exit_code == 1
    assert "stringly: the file's runner does not give back the metadata its writer was given" in result.stderr
    assert not (tmp_path / "mnist_cnn6_16-untrained.stringly.onnx").exists()


GHOST = """
import zoo
from torch import nn


def build(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], num_classes))


@zoo.hookimpl
def register_architectures(register):
    register(zoo.Architecture(name="ghost_net", builder=build, summary="a plugin's linear model"))
"""


def test_a_file_names_the_plugin_to_install_when_its_architecture_is_gone(
    fake_dist: FakeDist, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dist("zoo-ghost", GHOST, version="0.3.1")
    arch = get_registry().architecture("ghost_net")
    card = new_card(arch)
    assert card.provider == Provider("zoo-ghost", "0.3.1")
    path = tmp_path / "ghost.safetensors"
    checkpoint.save(path, arch.build().state_dict(), card)
    assert zoo("eval", str(path), "sevenseg").exit_code == 0  # loads while the plugin is on

    monkeypatch.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    get_registry.cache_clear()
    off = zoo("eval", str(path), "sevenseg")
    assert off.exit_code == 1 and "provided by zoo-ghost 0.3.1, which is turned off" in off.stderr

    gone = replace(card, provider=Provider("zoo-uninstalled", "2.0"))
    checkpoint.save(path, arch.build().state_dict(), gone)
    result = zoo("eval", str(path), "sevenseg")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "provided by zoo-uninstalled 2.0, which is not installed: pip install zoo-uninstalled" in result.stderr


def test_resume_state_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "last.safetensors"
    checkpoint.write(path, {"w": torch.zeros(1)}, {**CARD.to_json(), "__optimizer__": "broken"})
    with pytest.raises(ZooError, match=r"the optimizer state in .* is damaged"):
        checkpoint.load(path)
