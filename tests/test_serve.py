"""`zoo serve`: a real uvicorn server on loopback, the standard Triton HTTP client, dynamic batching that gives each
caller exactly its own rows, bounded and refused bad input, and the command itself in a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

pytest.importorskip("uvicorn", reason="zoo serve's extra is not installed: pip install 'zoo-classifiers[serve]'")
import tritonclient.http as triton
import uvicorn

import zoo
from zoo.loader import get_registry
from zoo.serving import Batcher, Busy, Served, ServeSettings, app, load_models

ROOT = Path(__file__).resolve().parent.parent
SEVEN = ROOT / "docs" / "seven.png"
WEIGHTS = "mnist_cnn32-mnist"


@dataclass
class Server:
    url: str
    models: dict[str, Served]

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.url + path, data=body, headers=headers or {}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()


@contextlib.contextmanager
def serving(models: dict[str, Served], settings: ServeSettings, cors: tuple[str, ...] = ()) -> Iterator[str]:
    """uvicorn in a thread, on a loopback port the kernel picks; its address."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app(models, settings, cors), log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join(30)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = zoo.train("cnn6", "sevenseg", epochs=1, limit=256, batch_size=64, progress="none",
                    out=tmp_path_factory.mktemp("serve") / "tiny-run")  # fmt: skip
    return run.path


@pytest.fixture(scope="module")
def server(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ZOO_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))  # the weights' ONNX export goes here
        settings = ServeSettings(max_batch_size=64, max_delay_ms=5)
        models = load_models(["cnn32:mnist", str(run_dir)])
        with serving(models, settings) as url:
            yield Server(url, models)


def in_process(model: Served, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(model.source), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]  # type: ignore[no-any-return]


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 28, 28), dtype=np.float32)


def test_the_triton_client_reads_metadata_and_infers_in_json_and_binary(
    server: Server, request: pytest.FixtureRequest
) -> None:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    request.addfinalizer(client.close)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(WEIGHTS)
    meta = client.get_model_metadata(WEIGHTS)
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert meta["parameters"]["classes"] == list("0123456789")
    x = images(3)
    expected = in_process(server.models[WEIGHTS], x)
    for binary in (False, True):
        given = triton.InferInput("input", list(x.shape), "FP32")
        given.set_data_from_numpy(x, binary_data=binary)
        wanted = triton.InferRequestedOutput("scores", binary_data=binary)
        result = client.infer(WEIGHTS, [given], outputs=[wanted])
        assert np.array_equal(result.as_numpy("scores"), expected), f"binary={binary}"
    given = triton.InferInput("input", list(x.shape), "FP32")
    given.set_data_from_numpy(x)
    assert np.array_equal(client.infer(WEIGHTS, [given]).as_numpy("scores"), expected), "no outputs named: binary"


def test_the_documented_client_example_runs_as_written(server: Server) -> None:
    (code,) = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "serving.md").read_text(), flags=re.DOTALL)
    assert '"127.0.0.1:8000"' in code
    code = code.replace('"127.0.0.1:8000"', repr(server.url.removeprefix("http://")))
    code += "\nclient.close()\n"  # the example leaves it to the end of the process
    namespace: dict[str, object] = {}
    exec(compile(code, "docs/serving.md", "exec"), namespace)
    assert np.asarray(namespace["scores"]).shape == (1, 10)


def batch_metrics(server: Server) -> tuple[float, float]:
    """(images, onnxruntime calls) so far for the weights, from /metrics."""
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = dict(re.findall(rf'^zoo_batch_size_(sum|count){{model="{WEIGHTS}"}} (\S+)$', text, flags=re.MULTILINE))
    return float(values["sum"]), float(values["count"])


def test_concurrent_requests_are_batched_and_each_gets_exactly_its_own_rows(server: Server) -> None:
    """64 single-image requests at once: the answers equal one in-process batch of the 64, row for row."""
    x = images(64, seed=1)
    expected = in_process(server.models[WEIGHTS], x)
    before = batch_metrics(server)

    def ask(i: int) -> np.ndarray:
        body = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                       "data": x[i].ravel().tolist()}]}).encode()  # fmt: skip
        status, _, reply = server.post(f"/v2/models/{WEIGHTS}/infer", body)
        assert status == 200, reply
        output = json.loads(reply)["outputs"][0]
        return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])

    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(ask, range(64)))
    assert all(np.array_equal(answers[i][0], expected[i]) for i in range(64))
    after = batch_metrics(server)
    sent, calls = after[0] - before[0], after[1] - before[1]
    assert sent == 64 and calls < 64, f"{sent} images in {calls} onnxruntime calls"


def test_an_image_is_classified_as_zoo_predict_classifies_it(server: Server) -> None:
    status, _, body = server.post(f"/v2/models/{WEIGHTS}/classify?top_k=3", SEVEN.read_bytes())
    reply = json.loads(body)
    (predicted,) = zoo.predict("cnn32:mnist", SEVEN, top_k=3)
    assert status == 200 and reply["inverted"] is True and reply["top"][0][0] == "7"
    assert [name for name, _ in reply["top"]] == [name for name, _ in predicted.top]
    assert np.allclose([p for _, p in reply["top"]], [p for _, p in predicted.top], atol=1e-6)
    boundary = "zooboundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="seven.png"\r\n\r\n'
    form = head.encode() + SEVEN.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    status, _, body = server.post(f"/v2/models/{WEIGHTS}/classify", form,
                                  {"Content-Type": f"multipart/form-data; boundary={boundary}"})  # fmt: skip
    assert status == 200 and json.loads(body)["top"][0][0] == "7"


def infer_body(shape: list[int], datatype: str = "FP32", data: list[float] | None = None, name: str = "input") -> bytes:
    values = data if data is not None else [0.0] * int(np.prod(shape))
    return json.dumps({"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": values}]}).encode()


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        (
            "/v2/models/nope/infer",
            infer_body([1, 1, 28, 28]),
            404,
            "unknown model 'nope'; served here: mnist_cnn32-mnist",
        ),
        (f"/v2/models/{WEIGHTS}/versions/2/infer", infer_body([1, 1, 28, 28]), 404, "has one version, 1"),
        (f"/v2/models/{WEIGHTS}/infer", infer_body([1, 3, 28, 28]), 400, "input shape [1, 3, 28, 28]"),
        (f"/v2/models/{WEIGHTS}/infer", infer_body([65, 1, 28, 28]), 400, "with N from 1 to 64"),
        (f"/v2/models/{WEIGHTS}/infer", infer_body([1, 1, 28, 28], "INT64"), 400, "input datatype 'INT64'"),
        (f"/v2/models/{WEIGHTS}/infer", infer_body([1, 1, 28, 28], name="x"), 400, "unexpected input 'x'"),
        (f"/v2/models/{WEIGHTS}/infer", infer_body([1, 1, 28, 28], data=[1.0]), 400, "a flat list of the shape's 784"),
        (f"/v2/models/{WEIGHTS}/infer", infer_body([1, 1, 28, 28], data=[1e39] * 784), 400, "NaN or infinite"),
        (f"/v2/models/{WEIGHTS}/infer", b"[" * 100_000, 400, "is not JSON"),
        (f"/v2/models/{WEIGHTS}/classify", b"not an image", 400, "the image sent: not an image zoo can read"),
        (f"/v2/models/{WEIGHTS}/classify", b"", 400, "no image"),
        (f"/v2/models/{WEIGHTS}/classify?top_k=0", SEVEN.read_bytes(), 400, "top_k takes 1 to 10"),
    ],
    ids=[
        "model",
        "version",
        "shape",
        "batch",
        "dtype",
        "name",
        "count",
        "overflow",
        "nested",
        "not-image",
        "empty",
        "top-k",
    ],
)
def test_bad_requests_get_a_4xx_with_the_reason(
    server: Server, path: str, body: bytes, status: int, message: str
) -> None:
    got, _, reply = server.post(path, body)
    assert got == status and message in json.loads(reply)["error"], reply[:300]


def test_inference_is_a_post(server: Server) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{server.url}/v2/models/{WEIGHTS}/infer", timeout=10)
    with refused.value as reply:
        assert reply.code == 405 and reply.headers["Allow"] == "POST" and "POST" in json.loads(reply.read())["error"]


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "chunked"])
def test_a_body_past_its_bound_is_refused_before_it_is_read(server: Server, declared: bool) -> None:
    """A gigabyte announced, or sent in chunks without a length: 413 after the header, or after the bound."""
    import http.client

    connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=30)
    try:
        if declared:
            connection.putrequest("POST", f"/v2/models/{WEIGHTS}/infer")
            connection.putheader("Content-Length", str(1 << 30))
            connection.endheaders()
        else:
            connection.request("POST", f"/v2/models/{WEIGHTS}/infer", body=iter([b" " * 65536] * 40),
                               encode_chunked=True)  # fmt: skip
        reply = connection.getresponse()
        assert (reply.status == 413 and "at most" in json.loads(reply.read())["error"]) or not declared
    finally:
        connection.close()


def test_a_run_is_served_with_its_pictures_and_nothing_else(server: Server, run_dir: Path) -> None:
    with urllib.request.urlopen(f"{server.url}/zoo/models/{run_dir.name}", timeout=10) as response:
        page = json.loads(response.read())
    assert page["plots"] == ["confusion", "curves", "misses"] and page["run"]["test_accuracy"] is not None
    with urllib.request.urlopen(f"{server.url}/zoo/models/{run_dir.name}/plots/curves.png", timeout=10) as response:
        assert response.read() == (run_dir / "curves.png").read_bytes()
    for path in ("/zoo/models/tiny-run/plots/..%2Fconfig.png", "/zoo/models/tiny-run/plots/report.png",
                 "/static/..%2F..%2Fserving.py"):  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.url + path, timeout=10)
        refused.value.close()  # an HTTPError holds its response open
        assert refused.value.code == 404, path


def test_metrics_count_requests_and_batches(server: Server) -> None:
    server.post(f"/v2/models/{WEIGHTS}/classify", SEVEN.read_bytes())
    server.post(f"/v2/models/{WEIGHTS}/infer", infer_body([1, 1, 28, 28]))
    server.post("/v2/models/nope/infer", infer_body([1, 1, 28, 28]))
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert f'zoo_requests_total{{endpoint="classify",model="{WEIGHTS}",status="200"}}' in text
    assert f'zoo_requests_total{{endpoint="infer",model="{WEIGHTS}",status="200"}}' in text
    assert 'zoo_requests_total{endpoint="infer",model="-",status="404"}' in text, "a name not served is not a label"
    assert f'zoo_request_seconds_count{{endpoint="infer",model="{WEIGHTS}"}}' in text
    assert f'zoo_batch_size_count{{model="{WEIGHTS}"}}' in text and "zoo_queue_images" in text


def test_browsers_of_other_sites_are_let_in_only_when_asked(server: Server) -> None:
    asked = {"Origin": "http://example.org"}
    with urllib.request.urlopen(urllib.request.Request(f"{server.url}/v2/models/{WEIGHTS}", headers=asked)) as reply:
        assert "access-control-allow-origin" not in {k.lower() for k in reply.headers}, "no CORS by default"
    with (
        serving(server.models, ServeSettings(), cors=("http://example.org",)) as url,
        urllib.request.urlopen(urllib.request.Request(f"{url}/v2/models/{WEIGHTS}", headers=asked)) as reply,
    ):
        assert reply.headers["Access-Control-Allow-Origin"] == "http://example.org"
        inference = urllib.request.Request(f"{url}/v2/models/{WEIGHTS}/infer", infer_body([1, 1, 28, 28]), asked)
        with urllib.request.urlopen(inference, timeout=10) as reply:
            assert reply.headers["Access-Control-Allow-Origin"] == "http://example.org"


def test_a_full_queue_is_refused_instead_of_growing() -> None:
    async def main() -> None:
        def slow(x: np.ndarray) -> np.ndarray:
            time.sleep(0.2)
            return x[:, 0, 0, :1]

        batcher = Batcher(slow, ServeSettings(max_batch_size=2, max_queue=4))
        waiting = [asyncio.create_task(batcher(np.zeros((2, 1, 1, 1), np.float32))) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Busy):
            await batcher(np.zeros((1, 1, 1, 1), np.float32))
        assert [len(await w) for w in waiting] == [2, 2]
        await batcher.close()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ready(process: subprocess.Popen[str], port: int) -> str:
    """The address of the `zoo serve` ``process`` once it answers on ``port``."""
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1).close()
            return url
        except OSError:
            assert time.monotonic() < deadline and process.poll() is None, "zoo serve did not start"
            time.sleep(0.1)


@pytest.mark.slow
def test_the_readme_command_serves_without_torch_for_onnx_and_drains_on_sigterm(server: Server) -> None:
    """`zoo.serving` on an .onnx file never imports torch; the README's `zoo serve cnn32:mnist` serves; another
    --host than loopback is warned about; SIGTERM lets a request in flight finish, then exits 0."""
    onnx = server.models[WEIGHTS].source
    check = ("import sys; from zoo.serving import load_models, app; app(load_models([sys.argv[1]])); "
             "assert 'torch' not in sys.modules, 'torch was imported'")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", check, str(onnx)], capture_output=True, text=True).returncode == 0
    readme = (ROOT / "README.md").read_text()
    assert ".venv/bin/pip install -e '.[serve]' && .venv/bin/zoo serve\ncnn32:mnist" in readme
    port = free_port()  # the README's command, on a free port (its weights' export is in this module's cache)
    command = [sys.executable, "-m", "zoo", "serve", "cnn32:mnist", "--port", str(port), "--max-delay-ms", "300",
               "--host", "0.0.0.0"]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        url = ready(process, port)
        in_flight = Server(url, {}).post  # waits 300 ms for a batch to fill: SIGTERM lands meanwhile
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(in_flight, f"/v2/models/{WEIGHTS}/classify", SEVEN.read_bytes())
            time.sleep(0.1)
            process.send_signal(signal.SIGTERM)
            status, _, body = answer.result(timeout=30)
        assert status == 200 and json.loads(body)["top"][0][0] == "7"
        _, said = process.communicate(timeout=30)
        assert process.returncode == 0 and f"zoo serve: http://0.0.0.0:{port}/" in said, said
        assert "warning: listening on 0.0.0.0, reachable from other machines" in said
    finally:
        process.kill()
        process.communicate()


CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install chromium (.ci/run does)")
def test_in_a_real_browser_a_drawn_seven_is_a_seven(server: Server, run_dir: Path) -> None:
    """Debian's Chromium driven by Playwright: the table of models, a 7 drawn with the mouse, docs/seven.png
    uploaded, a run's curves, and no error in the console. $ZOO_SCREENSHOTS=DIR keeps a picture of the page."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 900, "height": 1000})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url + "/")
        page.get_by_role("link", name=WEIGHTS).click()
        page.wait_for_selector("canvas")
        assert page.get_by_role("row", name="runtime").inner_text().split() == ["runtime", "onnxruntime"]
        box = page.locator("canvas").bounding_box()
        assert box is not None
        x, y, side = box["x"], box["y"], box["width"] / 280

        def at(px: float, py: float) -> tuple[float, float]:
            return x + px * side, y + py * side

        page.mouse.move(*at(70, 60))
        page.mouse.down()
        for px, py in [(130, 58), (210, 60), (185, 110), (160, 160), (140, 230)]:
            page.mouse.move(*at(px, py), steps=8)
        page.mouse.up()
        page.wait_for_function("window.zooTimings.length > 0")
        page.wait_for_timeout(300)  # answers to the live requests while drawing may still arrive
        assert page.locator(".bars li").first.inner_text().startswith("7"), page.locator(".bars").inner_text()
        if os.environ.get("ZOO_SCREENSHOTS"):
            page.screenshot(path=str(Path(os.environ["ZOO_SCREENSHOTS"]) / "serve-page.png"), full_page=False)
        drawn = page.evaluate("window.zooTimings.at(-1)")
        paint = page.evaluate("performance.getEntriesByName('first-contentful-paint')[0]?.startTime")

        page.set_input_files("#image", str(SEVEN))
        page.wait_for_function("window.zooTimings.length > 1")
        assert page.locator(".bars li").first.inner_text().startswith("7")
        assert "inverted" in page.get_by_role("status").inner_text()

        page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than the screen
        page.reload()
        page.wait_for_selector("canvas")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390

        page.goto(f"{server.url}/models/{run_dir.name}")
        curves = page.get_by_alt_text("curves of the run")
        curves.wait_for()
        page.wait_for_function("document.querySelector('img.plot').complete")
        assert curves.evaluate("img => img.naturalWidth") > 0
        browser.close()
    assert errors == []
    print(f"first contentful paint {paint:.0f} ms; a drawn digit's answer {drawn:.0f} ms after the stroke ended")


def group(leader: int) -> list[str]:
    """The live processes of a process group (an exited one not yet reaped by init is no longer running)."""
    listing = subprocess.run(
        ["ps", "-ww", "-o", "stat=,args=", "-g", str(leader)], capture_output=True, text=True
    ).stdout
    return [line for line in listing.splitlines() if line.strip() and not line.lstrip().startswith("Z")]


@pytest.mark.slow
def test_several_worker_processes_serve_one_port_and_stop_together(server: Server) -> None:
    onnx = server.models[WEIGHTS].source
    port = free_port()
    command = [sys.executable, "-m", "zoo", "serve", str(onnx), "--port", str(port), "--workers", "2"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        url = ready(process, port)
        name = onnx.name.split(".")[0]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: Server(url, {}).post(f"/v2/models/{name}/classify", SEVEN.read_bytes()),
                                    range(16)))  # fmt: skip
        assert all(status == 200 and json.loads(body)["top"][0][0] == "7" for status, _, body in answers)
        assert sum("spawn_main" in p for p in group(process.pid)) == 2, "two worker processes"
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
        time.sleep(0.5)
        assert group(process.pid) == [], "every worker stopped with the supervisor"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


@pytest.mark.parametrize("runtime", [r.name for r in get_registry().runtimes.values() if "onnx" in r.formats])
def test_a_runtime_serves_its_proved_scores_and_names_itself(server: Server, runtime: str) -> None:
    """`zoo serve --runtime NAME`: every model run by that runtime, proved against onnxruntime first; the protocol's
    platform and the page say which, and the scores are the proved runtime's, batched as ever."""
    onnx = str(server.models[WEIGHTS].source)
    models = load_models([onnx], runtime=runtime)
    (model,) = models.values()
    assert model.metadata()["platform"] == f"{runtime}_onnx"
    assert model.summary()["runtime"].startswith(f"{runtime} (float32): within ")
    x = images(5, seed=3)
    with serving(models, ServeSettings(max_batch_size=8)) as url:
        client = triton.InferenceServerClient(url.removeprefix("http://"))
        try:
            given = triton.InferInput("input", list(x.shape), "FP32")
            given.set_data_from_numpy(x, binary_data=True)
            got = client.infer(model.name, [given]).as_numpy("scores")
            assert client.get_model_metadata(model.name)["platform"] == f"{runtime}_onnx"
        finally:
            client.close()
    assert np.allclose(got, in_process(server.models[WEIGHTS], x), rtol=1e-4, atol=1e-4)
    assert np.array_equal(got, model.run(x)), "served as the runtime computes it"
    check = ("import sys; from zoo.serving import load_models, app; "
             "app(load_models([sys.argv[1]], runtime=sys.argv[2])); "
             "assert 'torch' not in sys.modules, 'torch was imported'")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", check, onnx, runtime], capture_output=True).returncode == 0
