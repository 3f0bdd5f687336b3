"""Plugin discovery through real entry points: third parties, broken plugins, collisions and the off switches."""

from __future__ import annotations

import ast
from collections.abc import Callable
from importlib.metadata import distribution
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import FakeDist

import zoo
from zoo import hookspecs
from zoo.cli import cli
from zoo.errors import PluginWarning
from zoo.loader import get_registry, load_registry

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
import zoo

@zoo.hookimpl
def register_architectures(register):
    register(zoo.Architecture(name="tiny_mlp", aliases=("tiny",), builder="torch.nn:Identity", summary="an MLP"))

@zoo.hookimpl
def register_datasets(register):
    register(zoo.Dataset(name="dots", loader="x:y", summary="dots", classes=("a", "b"), shape=(1, 8, 8),
                         mean=(0.5,), std=(0.5,), train_size=10, test_size=5, downloads=False))
"""


def test_builtins_come_through_the_entry_point_group() -> None:
    registry = load_registry()
    builtins = [p for p in registry.plugins if p.builtin]
    assert {p.name for p in builtins} == {"architectures", "datasets", "formats", "runtimes", "weights"}
    assert all(p.status == "loaded" and p.distribution == "zoo-classifiers" for p in builtins)
    assert set(registry.architectures) == {"mnist_cnn32", "mnist_cnn6_16", "lenet_bn", "cifar_seq"}
    assert {"mnist", "fashionmnist", "cifar10", "sevenseg", "sevenseg_rgb"} <= set(registry.datasets)


def test_pyproject_entry_points_and_plugins_folder_agree() -> None:
    """Every module in plugins/ and exporters/ that implements a hook is declared in pyproject, and nothing else is."""
    # The installed distribution's entry points are pyproject's (tomllib, to read it directly, is Python 3.11+).
    declared = {ep.name: ep.value for ep in distribution("zoo-classifiers").entry_points if ep.group == "zoo"}
    implementing = {
        f"zoo.{path.parent.name}.{path.stem}"
        for path in [*(ROOT / "plugins").glob("*.py"), *(ROOT / "exporters").glob("*.py")]
        if any(
            isinstance(node, ast.FunctionDef) and node.name.startswith("register_")
            for node in ast.parse(path.read_text()).body
        )
    }
    assert set(declared.values()) == implementing
    installed = {p.module for p in load_registry().plugins if p.builtin}
    assert installed == implementing, "reinstall the package (pip install -e .) after editing entry points"


def test_third_party_plugin_is_found_through_its_entry_point(fake_dist: FakeDist) -> None:
    fake_dist("zoo-tiny", GOOD, version="2.3")
    registry = get_registry()
    assert registry.architecture("tiny").name == "tiny_mlp"
    assert registry.dataset("dots").classes == ("a", "b")
    plugin = registry.provider(registry.architectures["tiny_mlp"])
    assert (plugin.distribution, plugin.version, plugin.status) == ("zoo-tiny", "2.3", "loaded")
    assert plugin.location.endswith("zoo_tiny.py")
    assert plugin.provides == ["architecture tiny_mlp", "data set dots"]


@pytest.mark.parametrize(
    ("source", "stage", "error"),
    [
        ("import not_a_module_anywhere\n", "failed to load", "ModuleNotFoundError"),
        (
            "import zoo\n@zoo.hookimpl\ndef register_architectures(register):\n    raise RuntimeError('boom')\n",
            "raised while registering",
            "RuntimeError: boom",
        ),
        (
            "import zoo\n@zoo.hookimpl\ndef register_architecture(register):\n    pass\n",
            "failed to load",
            "unknown hook register_architecture",
        ),
        (
            "import zoo\n@zoo.hookimpl\ndef register_datasets(register):\n    register('mnist')\n",
            "raised while registering",
            "TypeError: register_datasets got str, expected zoo.Dataset",
        ),
        (
            "import argparse\nargparse.ArgumentParser().parse_args(['--no-such-flag'])\n",  # exits at import
            "failed to load",
            "SystemExit: 2",
        ),
        (
            "import sys, zoo\n@zoo.hookimpl\ndef register_datasets(register):\n    sys.exit('bye')\n",
            "raised while registering",
            "SystemExit: bye",
        ),
    ],
    ids=["import-error", "hook-raises", "misspelt-hook", "wrong-type", "exits-at-import", "exits-in-hook"],
)
def test_a_broken_plugin_is_isolated_and_reported(fake_dist: FakeDist, source: str, stage: str, error: str) -> None:
    fake_dist("zoo-broken", source)
    with pytest.warns(PluginWarning, match=r"plugin 'main' from zoo-broken 1.0 .*" + stage) as record:
        registry = get_registry()
    assert len(record) == 1, "one warning per broken plugin"
    assert error in str(record[0].message)
    broken = next(p for p in registry.plugins if p.distribution == "zoo-broken")
    assert broken.status == "failed" and error in broken.error and broken.provides == []
    assert len(registry.architectures) == 4  # the built-ins still work

    get_registry.cache_clear()  # as in a fresh `zoo` process
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0
    assert "zoo-broken" in result.output and "failed" in result.output and error in result.output
    assert "zoo: warning: plugin 'main' from zoo-broken 1.0" in result.stderr
    assert CliRunner().invoke(cli, ["list"]).exit_code == 0
    strict = CliRunner().invoke(cli, ["plugins", "--strict"])  # for a CI that must not carry on without it
    assert strict.exit_code == 1 and "zoo: error: plugins with problems: main (see above)" in strict.stderr


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ("zoo.Exporter(name='onnx-int8', suffix='.onnx', writer='m:w', runner='m:r', summary='')",
         "export format 'onnx-int8' from zoo-half 1.0 is turned down: export format name 'onnx-int8' must be lower"),
        ("zoo.Architecture(name='resnet8', builder='zoo_half.nets', summary='')",
         "architecture 'resnet8' from zoo-half 1.0 is turned down: builder must be a callable or a 'package.module"),
        ("zoo.Dataset(name='npz', loader='m:f', summary='', classes=('a',), shape=(1, 8, 8), mean=(0.5,),"
         " std=(0.5,), train_size=1, test_size=1)",
         "data set 'npz' from zoo-half 1.0 is turned down: classes must be two or more"),
    ],
    ids=["exporter-name", "builder-reference", "one-class"],
)  # fmt: skip
def test_an_invalid_registration_is_turned_down_alone(fake_dist: FakeDist, bad: str, error: str) -> None:
    """The plugin's other items still register; the warning and `zoo plugins` name the item and the rule."""
    hook = {"E": "register_exporters", "A": "register_architectures", "D": "register_datasets"}[bad[4]]
    fake_dist("zoo-half", GOOD + f"\n@zoo.hookimpl(specname='{hook}')\ndef more(register):\n    register({bad})\n")
    with pytest.warns(PluginWarning) as record:
        registry = get_registry()
    assert len(record) == 1 and str(record[0].message).startswith(error)
    plugin = registry.provider(registry.architectures["tiny_mlp"])
    assert plugin.status == "loaded" and "data set dots" in plugin.provides and len(plugin.provides) == 2
    assert any(c.startswith(error) for c in plugin.conflicts)


def test_a_plugin_whose_hook_raises_contributes_nothing(fake_dist: FakeDist) -> None:
    fake_dist(
        "zoo-half",
        GOOD + "\n@zoo.hookimpl(specname='register_datasets')\ndef more(register):\n    raise ValueError('late')\n",
    )
    with pytest.warns(PluginWarning, match="late"):
        registry = get_registry()
    assert "tiny_mlp" not in registry.architectures and "dots" not in registry.datasets


def test_a_colliding_name_keeps_the_builtin_and_names_both_providers(fake_dist: FakeDist) -> None:
    fake_dist(
        "zoo-copycat",
        "import zoo\n@zoo.hookimpl\ndef register_architectures(register):\n"
        "    register(zoo.Architecture(name='lenet_bn', builder='x:y', summary='impostor'))\n"
        "    register(zoo.Architecture(name='other', aliases=('cnn32', 'mine'), builder='x:y', summary='other'))\n",
    )
    with pytest.warns(PluginWarning) as record:
        registry = get_registry()
    messages = [str(w.message) for w in record]
    assert any(
        "'lenet_bn' from zoo-copycat 1.0 is ignored: zoo-classifiers 0.1.0 already provides it" in m for m in messages
    )
    assert any("alias 'cnn32'" in m and "zoo-classifiers" in m for m in messages)
    assert registry.architectures["lenet_bn"].summary != "impostor"
    assert registry.provider(registry.architectures["lenet_bn"]).distribution == "zoo-classifiers"
    assert registry.architecture("cnn32").name == "mnist_cnn32"
    assert registry.architectures["other"].aliases == ("mine",)

    output = CliRunner().invoke(cli, ["plugins"]).output
    assert "already provides it" in output and "already uses it" in output


def test_disable_autoload_loads_only_builtins(fake_dist: FakeDist, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dist("zoo-tiny", GOOD)
    monkeypatch.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = get_registry()
    assert "tiny_mlp" not in registry.architectures and len(registry.architectures) == 4
    assert next(p for p in registry.plugins if p.distribution == "zoo-tiny").status == "disabled"
    assert "third-party plugins are off" in CliRunner().invoke(cli, ["plugins"]).output


@pytest.mark.parametrize("value", ["0", "false", "No", "off", ""])
def test_disable_autoload_set_to_a_false_value_leaves_plugins_on(
    fake_dist: FakeDist, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    fake_dist("zoo-tiny", GOOD)
    monkeypatch.setenv("ZOO_DISABLE_PLUGIN_AUTOLOAD", value)
    assert "tiny_mlp" in get_registry().architectures


def test_an_allow_list_matches_names_as_pip_spells_them(fake_dist: FakeDist, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dist("zoo-tiny", GOOD)
    monkeypatch.setenv("ZOO_PLUGINS", "Zoo_Tiny")
    assert "tiny_mlp" in get_registry().architectures


def test_an_empty_allow_list_says_that_it_turns_every_plugin_off(
    fake_dist: FakeDist, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dist("zoo-tiny", GOOD)
    monkeypatch.setenv("ZOO_PLUGINS", " ")
    with pytest.warns(PluginWarning, match=r"\$ZOO_PLUGINS is set but lists no plugin, so no third-party plugin loads"):
        registry = get_registry()
    assert "tiny_mlp" not in registry.architectures


def test_registering_is_linear_in_the_number_of_items(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each registration looks its name up once: 10,000 architectures cost every command 14 s when the table of
    taken names was rebuilt per item. Counted in name normalisations, which no machine's speed changes."""
    import zoo.registry
    from zoo.registry import Plugin, Registry

    calls = 0
    real = zoo.registry.normalize

    def counting(name: str) -> str:
        nonlocal calls
        calls += 1
        return real(name)

    monkeypatch.setattr(zoo.registry, "normalize", counting)

    def register(n: int) -> int:
        nonlocal calls
        calls, registry, plugin = 0, Registry(), Plugin("many", "zoo-many", "1.0", "many")
        for i in range(n):
            registry.add(zoo.Architecture(f"net{i}", builder="x:y", summary="s", aliases=(f"n{i}",)), plugin)
        return calls

    small, large = register(500), register(2000)
    assert large <= 4.2 * small, f"{small} normalisations for 500 items, {large} for 2,000: not linear"


def test_an_allow_list_loads_only_the_named_plugins(fake_dist: FakeDist, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dist("zoo-tiny", GOOD)
    fake_dist("zoo-broken", "import not_a_module_anywhere\n")
    monkeypatch.setenv("ZOO_PLUGINS", "zoo-tiny")
    registry = get_registry()  # no warning: the broken plugin is never imported
    status = {p.distribution: p.status for p in registry.plugins}
    assert status == {"zoo-classifiers": "loaded", "zoo-tiny": "loaded", "zoo-broken": "disabled"}


def test_an_allow_list_naming_no_installed_plugin_warns(fake_dist: FakeDist, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dist("zoo-tiny", GOOD)
    monkeypatch.setenv("ZOO_PLUGINS", "zoo-tiny, zoo-tniy")
    with pytest.warns(PluginWarning, match=r"\$ZOO_PLUGINS names zoo-tniy, which no installed plugin is "
                                           r"\(installed: zoo-tiny\); fix the list"):  # fmt: skip
        registry = get_registry()
    assert "tiny_mlp" in registry.architectures


COMMANDS = """
import click
import zoo

@click.command("hello")
@click.argument("who")
def hello(who):
    \"\"\"Greet WHO.\"\"\"
    if who == "nobody":
        raise zoo.ZooError("nobody to greet; name someone")
    click.echo(f"hello {who}")

@click.command("train")
def train():
    click.echo("not zoo's train")

@zoo.hookimpl
def register_commands(register):
    register(hello)
    register(train)
"""


def test_a_plugin_adds_commands_and_zoo_keeps_its_own(fake_dist: FakeDist) -> None:
    fake_dist("zoo-greet", COMMANDS)
    runner = CliRunner()
    greeted = runner.invoke(cli, ["hello", "world"])
    assert greeted.stdout == "hello world\n" and "command train from zoo-greet 1.0 is ignored" in greeted.stderr
    failed = runner.invoke(cli, ["hello", "nobody"])
    assert failed.exit_code == 1 and failed.stderr == "zoo: error: nobody to greet; name someone\n"
    assert "Greet WHO." in runner.invoke(cli, ["--help"]).stdout

    get_registry.cache_clear()
    listed = runner.invoke(cli, ["plugins", "--strict"])
    row = next(line for line in listed.stdout.splitlines() if "zoo-greet" in line and " loaded " in line)
    assert "command hello" in row and "command train" not in row
    assert "command train from zoo-greet 1.0 is ignored: zoo has a command of that name; rename it" in listed.stderr
    assert listed.exit_code == 1
    assert "not zoo's train" not in runner.invoke(cli, ["train", "--help"]).output


def test_hookspecs_are_the_documented_contract() -> None:
    specs = {name for name in dir(hookspecs) if name.startswith("register_")}
    assert specs == {"register_architectures", "register_datasets", "register_exporters", "register_runtimes",
                     "register_weights", "register_commands"}  # fmt: skip
    assert zoo.hookimpl is hookspecs.hookimpl
    for name in specs:
        assert getattr(hookspecs, name).__doc__


NEAR_NAMES = """
import zoo

@zoo.hookimpl
def register_architectures(register):
    register(zoo.Architecture(name="lenet_plain", builder="zoo.plugins.nets:LeNetBN", summary="LeNet, plainer"))
    register(zoo.Architecture(name="cnn32_wide", builder="zoo.plugins.nets:MnistCNN32", summary="wider"))
"""


def test_the_built_in_short_names_stay_unambiguous_beside_plugins_with_near_names(
    fake_dist: FakeDist, idx_root: Callable[[str, int], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`zoo train lenet fashionmnist` and `zoo export cnn32 --onnx` mean the built-ins: aliases beat word prefixes."""
    fake_dist("zoo-near-names", NEAR_NAMES)
    registry = get_registry()
    assert {"lenet_plain", "cnn32_wide"} <= set(registry.architectures)
    assert [registry.architecture(n).name for n in ("lenet", "cnn32", "cnn6", "cifar")] == [
        "lenet_bn", "mnist_cnn32", "mnist_cnn6_16", "cifar_seq"]  # fmt: skip
    monkeypatch.chdir(tmp_path)
    data = idx_root("FashionMNIST", 64)
    runner = CliRunner()
    trained = runner.invoke(cli, ["train", "lenet", "fashionmnist", "--data-dir", str(data), "--max-steps", "2",
                                  "--quiet"])  # fmt: skip
    assert trained.exit_code == 0, trained.output
    assert [p.name.split("-")[0] for p in (tmp_path / "runs").iterdir()] == ["lenet_bn"]
    assert runner.invoke(cli, ["train", "cnn32", "sevenseg", "--max-steps", "2", "--quiet"]).exit_code == 0
    exported = runner.invoke(cli, ["export", "cnn32", "--onnx"])
    assert exported.exit_code == 0, exported.output
    assert list((tmp_path / "runs").glob("mnist_cnn32-sevenseg-*/export/mnist_cnn32.onnx"))


AUTHOR = """
import torch
import zoo

def ignores_classes(input_shape, num_classes):
    c, h, w = input_shape
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(c * h * w, 10))

@zoo.hookimpl
def register_architectures(register):
    register(zoo.Architecture(name="mobilenet", builder="zoo_author.mobilenets:build", summary="a typo"))
    register(zoo.Architecture(name="fixed_ten", builder=ignores_classes, summary="ten outputs, always"))
"""


def test_a_reference_that_does_not_import_names_the_item_and_its_plugin(fake_dist: FakeDist) -> None:
    fake_dist("zoo-author", AUTHOR, version="0.1.0")
    info = CliRunner().invoke(cli, ["info", "mobilenet"])
    assert info.exit_code == 1
    assert info.stderr.strip() == (
        "zoo: error: architecture mobilenet from zoo-author 0.1.0: its builder 'zoo_author.mobilenets:build' does "
        "not import (ModuleNotFoundError: No module named 'zoo_author.mobilenets'; 'zoo_author' is not a package); "
        "fix the reference in the plugin"
    )
    check = CliRunner().invoke(cli, ["check", "mobilenet"])
    assert check.exit_code == 1
    assert "FAIL  architecture mobilenet: builder import — architecture mobilenet from zoo-author" in check.output
    assert "skip  architecture mobilenet: exports to onnx with parity — not run: builder import failed" in check.output


def test_an_architecture_that_ignores_num_classes_is_stopped_when_built(fake_dist: FakeDist, tmp_path: Path) -> None:
    from test_folders import make_folder

    fake_dist("zoo-author", AUTHOR, version="0.1.0")
    folder = make_folder(tmp_path / "three", {"a": 8, "b": 8, "c": 8}, size=(28, 28))
    result = CliRunner().invoke(cli, ["train", "fixed_ten", str(folder), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "zoo: error: fixed_ten built for 3 classes gives (1, 10) for one image, not (1, 3); "
        "its builder must size the last layer from num_classes"
    )
    assert not (tmp_path / "run").exists()  # stopped before anything was written; the kit's check: test_conformance
