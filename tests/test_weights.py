"""Published weights: the register_weights hook, ARCH:TAG everywhere, sha256 checks, downloads, and fine-tuning."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from conftest import FakeDist
from PIL import Image

import zoo
import zoo.weights
from zoo import Weights, checkpoint
from zoo.cli import cli
from zoo.errors import PluginWarning, UnknownName, ZooError
from zoo.files import sha256
from zoo.loader import get_registry
from zoo.summary import count_macs, summarize
from zoo.weights import fetch, split_name, train_command

ROOT = Path(__file__).resolve().parent.parent
DATA_ROOTS = (ROOT.parent / "shared" / "datasets", ROOT.parent / "data")
"""Where real data sets may sit beside a checkout; tests that need them skip when they are absent."""
BUILTIN = sorted(get_registry().weights)


def zoo_cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def record_of(name: str, **changes: object) -> Weights:
    """A built-in record with ``changes``: the same file, served or registered another way."""
    return Weights.from_json({**get_registry().weights[name].to_json(), **changes})


# -- the built-in weights, each of them: what their records promise -------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_weights_are_what_their_records_say(name: str) -> None:
    w = get_registry().weights[name]
    path = fetch(w)
    assert path.stat().st_size == w.size and sha256(path) == w.sha256
    card = checkpoint.load(path).card
    assert (card.architecture, card.classes, card.input_shape) == (w.architecture, w.classes, w.input_shape)
    assert (card.mean, card.std, card.dataset) == (w.mean, w.std, w.dataset)
    model = zoo.load(w.architecture, weights=w.tag)
    layers = summarize(model, w.input_shape)
    assert (sum(l.params for l in layers), sum(l.macs for l in layers)) == (w.params, w.macs)
    assert count_macs(model, w.input_shape) == w.macs  # nothing outside the layers in the built-ins
    assert not model.training and model.zoo_weights is w
    # The command rebuilds the run's settings: it names the architecture, data set and seed it was trained with.
    assert w.command.startswith(f"zoo train {w.architecture} {w.dataset} ") and f"--seed {w.seed}" in w.command
    assert w.machine and w.zoo_version and w.torch_version and 0.8 < w.accuracy <= 1


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILTIN)
def test_zoo_eval_reproduces_the_recorded_accuracy(name: str) -> None:
    w = get_registry().weights[name]
    ds = get_registry().dataset(w.dataset)
    root = next((r for r in DATA_ROOTS if _has(ds.name, r)), None)
    if root is None:
        pytest.skip(f"the {ds.name} files are not beside this checkout ({' or '.join(map(str, DATA_ROOTS))})")
    result = zoo_cli("eval", w.name, "--data-dir", str(root), "--json", "--out", str(ROOT / "build" / "eval"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] == w.accuracy


def _has(dataset: str, root: Path) -> bool:
    folders = {
        "mnist": ["MNIST"],
        "fashionmnist": ["FashionMNIST"],
        "cifar10": ["cifar-10-batches-py", "CIFAR-10-dataset"],
    }
    return any((root / f).is_dir() for f in folders[dataset])


def test_goals_and_defaults_of_the_builtin_weights() -> None:
    registry = get_registry()
    assert {w.architecture for w in registry.weights.values()} == set(registry.architectures)
    assert registry.find_weights("lenet").name == "lenet_bn:fashionmnist"
    assert registry.find_weights("cnn32").name == "mnist_cnn32:mnist"


# -- names: ARCH:TAG, unknown tags, short names --------------------------------------------------------------------


def test_arch_tag_names() -> None:
    assert split_name("cnn32:mnist") == ("cnn32", "mnist")
    assert split_name("runs/x") is None and split_name("C:/x") is None and split_name("a:b:c") is None
    assert get_registry().find_weights("cnn6", "MNIST").name == "mnist_cnn6_16:mnist"
    with pytest.raises(UnknownName, match=r"mnist_cnn32 has no weights tagged 'cifar10'; it has mnist_cnn32:mnist"):
        get_registry().find_weights("cnn32", "cifar10")


def test_unknown_tag_on_the_command_line_lists_the_tags() -> None:
    result = zoo_cli("eval", "lenet:mnst")
    assert result.exit_code == 1
    assert ("lenet_bn has no weights tagged 'mnst'; did you mean lenet_bn:mnist? it has lenet_bn:fashionmnist, "
            "lenet_bn:mnist") in result.output  # fmt: skip


def test_weights_table_and_json() -> None:
    result = zoo_cli("weights")
    assert result.exit_code == 0
    header, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ["weights", "data", "set"] and len(rows) == len(BUILTIN)
    assert "lenet_bn:fashionmnist *" in result.stdout  # the default of an architecture with several
    records = json.loads(zoo_cli("weights", "cnn32", "--json").stdout)
    assert [r["name"] for r in records] == ["mnist_cnn32:mnist"]
    assert records[0]["provider"]["distribution"] == "zoo-classifiers" and records[0]["params"] == 421_642
    assert zoo_cli("weights", "*:fashionmnist", "--json").stdout.count('"name"') == 1
    assert zoo_cli("weights", "resnet").exit_code == 1


def test_info_lists_an_architectures_weights() -> None:
    result = zoo_cli("info", "lenet")
    assert "published weights" in result.stdout
    assert "lenet_bn:fashionmnist *" in result.stdout and "lenet_bn:mnist" in result.stdout


def test_readme_results_table_is_generated_from_the_registry() -> None:
    table = zoo_cli("weights", "--markdown").stdout.strip()
    assert table.count("\n") == len(BUILTIN) + 1
    assert table in (ROOT / "README.md").read_text(), "regenerate the README table with `zoo weights --markdown`"


# -- using them: export, predict, load, without any run --------------------------------------------------------------


def test_export_of_an_architecture_without_runs_uses_its_published_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = zoo_cli("export", "cnn6", "--onnx")
    assert result.exit_code == 0, result.output
    assert "published weights mnist_cnn6_16:mnist" in result.output
    exported = tmp_path / "exports" / "mnist_cnn6_16-mnist" / "mnist_cnn6_16-mnist.onnx"
    assert exported.is_file()
    by_name = zoo_cli("export", "cnn6:mnist", "--safetensors")
    assert by_name.exit_code == 0 and "published weights" not in by_name.output
    # The exported safetensors file is the published one's weights, bit for bit.
    theirs = checkpoint.load(fetch(get_registry().weights["mnist_cnn6_16:mnist"])).weights
    ours = checkpoint.load(exported.with_suffix(".safetensors")).weights
    assert all(torch.equal(theirs[k], ours[k]) for k in theirs)


def test_export_of_an_architecture_without_runs_or_weights_says_what_to_do(fake_dist: FakeDist) -> None:
    fake_dist(
        "zoo-bare",
        """
        import zoo

        @zoo.hookimpl
        def register_architectures(register):
            register(zoo.Architecture(name="bare_cnn", builder="zoo.plugins.nets:MnistCNN6_16", summary="no weights"))
    """,
    )
    result = zoo_cli("export", "bare_cnn", "--runs-dir", "/nonexistent-runs")
    assert result.exit_code == 1
    assert "no trained run of bare_cnn in /nonexistent-runs/; train one with `zoo train bare_cnn" in result.output


def test_predict_and_transforms_agree(tmp_path: Path) -> None:
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[4:24, 10:18] = 220  # a bright upright block on black, as FashionMNIST shows a trouser
    image = tmp_path / "thing.png"
    Image.fromarray(pixels).save(image)
    result = zoo_cli("predict", "lenet:fashionmnist", str(image), "--no-invert")
    assert result.exit_code == 0, result.output
    top = zoo.predict("lenet:fashionmnist", [image], top_k=1, invert=False)[0].top[0][0]
    assert result.stdout.startswith(f"{image}: {top} ")
    model = zoo.load("lenet:fashionmnist")
    x = model.zoo_weights.transforms()(Image.open(image))
    with torch.no_grad():
        assert model.zoo_card.classes[int(model(x[None]).argmax())] == top


# -- verified on every load ----------------------------------------------------------------------------------------


@pytest.fixture
def weights_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An installed plugin package shipping cnn6_16's MNIST weights as its own package data, through the hook."""
    site = tmp_path / "site"
    package = site / "zoo_shipped"
    (package / "weights").mkdir(parents=True)
    builtin = get_registry().weights["mnist_cnn6_16:mnist"]
    shutil.copyfile(fetch(builtin), package / "weights" / "mnist_cnn6_16-shipped.safetensors")
    record = {**builtin.to_json(), "tag": "shipped"}
    del record["file"]
    (package / "weights" / "mnist_cnn6_16-shipped.json").write_text(json.dumps(record))
    (package / "__init__.py").write_text(
        textwrap.dedent("""
        import zoo
        from zoo.weights import packaged

        @zoo.hookimpl
        def register_weights(register):
            for w in packaged(__name__):
                register(w)
            register(zoo.Weights.from_json({**packaged(__name__)[0].to_json(), "architecture": "resnet_nope"}))
    """)
    )
    info = site / "zoo_shipped-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-shipped\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[zoo]\nshipped = zoo_shipped\n")
    monkeypatch.syspath_prepend(str(site))
    get_registry.cache_clear()
    yield package / "weights" / "mnist_cnn6_16-shipped.safetensors"
    sys.modules.pop("zoo_shipped", None)  # the next test's copy lives elsewhere


def test_plugins_register_weights_and_bad_ones_are_a_warning(weights_plugin: Path) -> None:
    with pytest.warns(PluginWarning, match="no plugin registers the architecture 'resnet_nope'"):
        registry = get_registry()
    assert "mnist_cnn6_16:shipped" in registry.weights and "resnet_nope:shipped" not in registry.weights
    assert registry.provider(registry.weights["mnist_cnn6_16:shipped"]).label == "zoo-shipped 1.0"
    assert zoo.load("cnn6:shipped").zoo_weights.tag == "shipped"


def test_a_changed_or_missing_file_is_refused(weights_plugin: Path, tmp_path: Path) -> None:
    with pytest.warns(PluginWarning):
        get_registry()
    data = bytearray(weights_plugin.read_bytes())
    data[-1] ^= 1  # one bit of the last weight
    weights_plugin.write_bytes(bytes(data))
    result = zoo_cli("predict", "cnn6:shipped", str(tmp_path / "any.png"))
    assert result.exit_code == 1
    assert f"{weights_plugin} is not the file of weights mnist_cnn6_16:shipped: its sha256 is" in result.output
    assert "reinstall zoo-shipped" in result.output and "Traceback" not in result.output
    weights_plugin.unlink()
    result = zoo_cli("eval", "cnn6:shipped")
    assert "missing from the install of zoo-shipped 1.0" in result.output
    assert "pip install --force-reinstall zoo-shipped" in result.output


# -- downloads: once, whole, verified ------------------------------------------------------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []  # noqa: RUF012 (shared with the test on purpose)

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        _Handler.requests.append(self.path)
        if self.path.startswith("/cut/"):  # promises the whole file, sends half, hangs up
            body = (Path(self.directory) / self.path[5:]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            return
        if self.path.startswith("/drip/"):  # a byte every 50 ms: never silent long enough for a read timeout
            size = (Path(self.directory) / self.path[6:]).stat().st_size
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            for _ in range(200):  # bounded: 10 s at most
                try:
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                except OSError:
                    return  # the client gave up
                time.sleep(0.05)
            return
        if self.path.startswith("/elsewhere/"):  # the same file, on another host name
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{self.server.server_port}/{self.path[11:]}")
            self.end_headers()
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    served = tmp_path / "served"
    served.mkdir()
    _Handler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", served
    httpd.shutdown()
    httpd.server_close()


def test_a_url_weight_downloads_once_into_the_cache(server: tuple[str, Path], cache: Path) -> None:
    url, served = server
    builtin = get_registry().weights["mnist_cnn6_16:mnist"]
    shutil.copyfile(fetch(builtin), served / "w.safetensors")
    w = record_of(builtin.name, file="", url=f"{url}/w.safetensors")
    first = fetch(w, progress=False)
    assert first.is_relative_to(cache) and sha256(first) == w.sha256
    assert fetch(w, progress=False) == first and _Handler.requests == ["/w.safetensors"]
    data = bytearray(first.read_bytes())
    data[100] ^= 1
    first.write_bytes(bytes(data))
    with pytest.raises(ZooError, match=r"is not the file of weights .*delete it, and zoo downloads it again"):
        fetch(w, progress=False)


@pytest.mark.parametrize(
    ("serve", "path", "message"),
    [
        ("half", "w.safetensors", "stopped after .* bytes; nothing was saved"),
        ("whole", "cut/w.safetensors", "stopped after .* bytes; .* fetch http://.* yourself and save it as"),
        ("tampered", "w.safetensors", "sent a file whose sha256 is .* it was not saved"),
        ("longer", "w.safetensors", "sends more than the .* bytes"),
    ],
)
def test_bad_downloads_leave_nothing_behind(
    server: tuple[str, Path], cache: Path, serve: str, path: str, message: str
) -> None:
    url, served = server
    builtin = get_registry().weights["mnist_cnn6_16:mnist"]
    body = fetch(builtin).read_bytes()
    body = {
        "half": body[: len(body) // 2],
        "whole": body,
        "longer": body + b"\0",
        "tampered": body[:-1] + bytes([body[-1] ^ 1]),
    }[serve]
    (served / "w.safetensors").write_bytes(body)
    w = record_of(builtin.name, file="", url=f"{url}/{path}")
    with pytest.raises(ZooError, match=message):
        fetch(w, progress=False)
    assert not any(p.is_file() for p in cache.rglob("*"))


def test_a_download_that_drips_ends_at_its_deadline(
    server: tuple[str, Path], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, served = server
    builtin = get_registry().weights["mnist_cnn6_16:mnist"]
    shutil.copyfile(fetch(builtin), served / "w.safetensors")
    monkeypatch.setattr(zoo.weights, "_GRACE_S", 0.5)  # the deadline of a file this size: 0.5 s + 240 KB at 1 MB/s
    monkeypatch.setattr(zoo.weights, "_MIN_BYTES_PER_S", 1 << 20)
    w = record_of(builtin.name, file="", url=f"{url}/drip/w.safetensors")
    started = time.monotonic()
    with pytest.raises(ZooError, match=rf"is too slow \(\d+ of {builtin.size:,} bytes in 1 s.*nothing was saved"):
        fetch(w, progress=False)
    assert time.monotonic() - started < 5 and not any(p.is_file() for p in cache.rglob("*"))


def test_a_redirect_to_another_host_is_refused(server: tuple[str, Path], cache: Path) -> None:
    url, served = server
    builtin = get_registry().weights["mnist_cnn6_16:mnist"]
    shutil.copyfile(fetch(builtin), served / "w.safetensors")
    w = record_of(builtin.name, file="", url=f"{url}/elsewhere/w.safetensors")
    with pytest.raises(ZooError, match=r"redirects to another host \(http://localhost:"):
        fetch(w, progress=False)
    assert _Handler.requests == ["/elsewhere/w.safetensors"] and not any(p.is_file() for p in cache.rglob("*"))


def test_offline_says_which_url_to_fetch_and_where_to_put_it(cache: Path) -> None:
    w = record_of("mnist_cnn6_16:mnist", file="", url="http://127.0.0.1:9/w.safetensors")
    with pytest.raises(ZooError, match=r"fetch http://127.0.0.1:9/w.safetensors yourself and save it as .*cache"):
        fetch(w, progress=False)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sha256": "abc"}, "sha256 must be 64"),
        ({"url": "http://x/w"}, "exactly one of them"),
        ({"file": "", "url": "ftp://x/w"}, "url must be http"),
        ({"size": 0}, "size must be"),
        ({"tag": "Bad Tag"}, "weights tag name"),
    ],
)
def test_bad_records_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        record_of("mnist_cnn6_16:mnist", **changes)


# -- fine-tuning ---------------------------------------------------------------------------------------------------


def test_init_starts_from_published_weights(tmp_path: Path) -> None:
    w = get_registry().weights["mnist_cnn6_16:mnist"]
    result = zoo_cli(
        "train",
        "cnn6",
        "sevenseg",
        "--init",
        "cnn6:mnist",
        "--max-steps",
        "1",
        "--lr",
        "1e-12",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    published, trained = checkpoint.load(fetch(w)).weights, checkpoint.load(tmp_path / "run" / "best.safetensors")
    assert all(torch.allclose(published[k], trained.weights[k], atol=1e-6) for k in published)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["init_sha256"] == w.sha256 and config["train"]["init"] == "cnn6:mnist"


def test_init_with_another_class_count_gets_a_new_head(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for label, name in enumerate(("dark", "light")):
        (tmp_path / "two" / name).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 60, size=(28, 28), dtype=np.uint8) + np.uint8(120 * label)
            Image.fromarray(pixels).save(tmp_path / "two" / name / f"{i}.png")
    result = zoo_cli(
        "train",
        "cnn6",
        str(tmp_path / "two"),
        "--init",
        "cnn6:mnist",
        "--max-steps",
        "1",
        "--lr",
        "1e-12",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--out",
        str(tmp_path / "run"),
    )
    assert result.exit_code == 0, result.output
    assert "a new classifier head for 2 classes" in result.output
    published = checkpoint.load(fetch(get_registry().weights["mnist_cnn6_16:mnist"])).weights
    trained = checkpoint.load(tmp_path / "run" / "best.safetensors").weights
    head = {k for k in published if published[k].shape != trained[k].shape}
    assert {trained[k].shape[0] for k in head} == {2} and len(head) == 2
    assert all(torch.allclose(published[k], trained[k], atol=1e-6) for k in published.keys() - head)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cnn6", "sevenseg_rgb"], "was trained on 1x28x28 images, sevenseg_rgb has 3x32x32"),
        (["lenet", "sevenseg"], "holds mnist_cnn6_16 weights, not lenet_bn's"),
    ],
)
def test_init_that_cannot_fit_is_refused(tmp_path: Path, args: list[str], message: str) -> None:
    result = zoo_cli("train", *args, "--init", "cnn6:mnist", "--out", str(tmp_path / "run"))
    assert result.exit_code == 1 and message in result.output
    assert not (tmp_path / "run" / "best.safetensors").exists()


@pytest.mark.slow
def test_publish_makes_a_run_into_weights_and_their_record(tmp_path: Path) -> None:
    run, out = tmp_path / "run", tmp_path / "pkg" / "weights"
    trained = zoo_cli("train", "cnn6", "sevenseg", "--epochs", "1", "--max-steps", "5", "--out", str(run), "--quiet")
    assert trained.exit_code == 0, trained.output
    result = zoo_cli("publish", str(run), "--tag", "tiny", "--out", str(out))
    assert result.exit_code == 0, result.output
    record = json.loads((out / "mnist_cnn6_16-tiny.json").read_text())
    file = out / "mnist_cnn6_16-tiny.safetensors"
    assert record["sha256"] == sha256(file) and record["size"] == file.stat().st_size
    assert record["accuracy"] == json.loads(zoo_cli("eval", str(file), "--json").stdout)["accuracy"]
    assert record["command"].startswith("zoo train mnist_cnn6_16 sevenseg ") and "--max-steps 5" in record["command"]
    assert (record["params"], record["dataset"], record["tag"]) == (60_074, "sevenseg", "tiny")
    weights = Weights.from_json(record, file="pkg:weights/mnist_cnn6_16-tiny.safetensors")
    assert weights.name == "mnist_cnn6_16:tiny" and weights.classes == tuple("0123456789")
    (run / "summary.json").unlink()
    unfinished = zoo_cli("publish", str(run), "--out", str(out))
    assert unfinished.exit_code == 1 and "is not a finished run" in unfinished.output


def test_train_command_spells_out_every_setting() -> None:
    command = train_command(
        {
            "architecture": "lenet_bn",
            "dataset": "mnist",
            "lr": 0.005,
            "amp": False,
            "grayscale": None,
            "augment": "crop",
            "device": "auto",
            "threads": 2,
        }
    )
    assert command == "zoo train lenet_bn mnist --lr 0.005 --augment crop --threads 2"


def test_weights_transforms_turn_a_grey_image_round_as_zoo_predict_does() -> None:
    """docs/seven.png is dark ink on white; MNIST digits are light on black. The API example classified it as 8."""
    model = zoo.load("cnn32", weights="mnist")
    seven = Image.open(ROOT / "docs" / "seven.png").convert("L")
    prepare = model.zoo_weights.transforms
    assert torch.equal(prepare()(seven), prepare(invert=True)(seven))
    assert not torch.equal(prepare()(seven), prepare(invert=False)(seven))
    with torch.no_grad():
        assert model(prepare()(seven)[None]).argmax().item() == 7
    (predicted,) = zoo.predict("cnn32:mnist", ROOT / "docs" / "seven.png")  # one file, not a sequence of letters
    assert predicted.top[0][0] == "7" and predicted.inverted


@pytest.mark.parametrize("invert", ["no", 0, "False"])
def test_invert_takes_booleans_or_none_only(invert: object) -> None:
    with pytest.raises(zoo.SettingError, match=r"invert takes True, False or None"):
        zoo.predict("cnn32:mnist", [ROOT / "docs" / "seven.png"], invert=invert)  # type: ignore[arg-type]
    with pytest.raises(zoo.SettingError, match=r"invert takes True, False or None"):
        zoo.Weights.transforms(get_registry().weights["mnist_cnn32:mnist"], invert=invert)  # type: ignore[arg-type]
