"""Benchmark: `zoo serve` under load, side by side with the HTTP stack's own limit and with established servers.

Single-image requests from wrk (Debian's `wrk`, one load generator for every server) at concurrency 1, 16 and 64,
for each model: requests/s and p50/p99 latency for
- zoo serve with batching (--max-batch-size 64) and without (1), JSON and binary tensors;
- null endpoints reading the body and answering a constant, on uvicorn through Starlette (the goal's yardstick)
  and in plain ASGI as zoo's inference route is (the HTTP limit of this machine);
- LitServe and MLServer (both speak HTTP on uvicorn) serving the same ONNX file with onnxruntime, in a virtual
  environment of their own (`--peers PYTHON`: python3 -m venv /tmp/peers && /tmp/peers/bin/pip install litserve
  mlserver onnxruntime numpy); MLServer with its adaptive batching on, LitServe with max_batch_size 64.
Then the batch gain in-process (onnxruntime, images/s at batch 64 over batch 1) next to what batching gained zoo.

Run: python tests/benchmarks/serve_load.py [--models cnn32:mnist cifar_seq:cifar10] [--seconds 5] [--peers PY]
Goals: at concurrency 64, zoo >= the best peer in requests/s with p99 no worse; batching reaches >= 80% of the
in-process gain; binary requests for cnn32 >= 50% of the null endpoint's rate.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime
from machine import describe

import zoo.serving

NULL_APP = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

async def null(request):
    await request.body()
    return Response(b'{"outputs":[]}', media_type="application/json")

app = Starlette(routes=[Route("/null", null, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""

ASGI_NULL_APP = """
import sys, uvicorn

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"14")]})
    await send({"type": "http.response.body", "body": b'{"outputs":[]}'})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""

NAIVE_APP = """
import json, sys, numpy as np, onnxruntime, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

session = onnxruntime.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])

async def infer(request):  # what a first server looks like: the standard library's JSON, one image per call
    tensor = json.loads(await request.body())["inputs"][0]
    scores = session.run(None, {"input": np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])})[0]
    return Response(json.dumps({"outputs": [{"name": "scores", "data": scores.ravel().tolist()}]}),
                    media_type="application/json")

app = Starlette(routes=[Route("/infer", infer, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""

LITSERVE_APP = """
import sys
import numpy as np, onnxruntime, litserve as ls

class Api(ls.LitAPI):
    def setup(self, device):
        self.session = onnxruntime.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
        self.shape = [d for d in self.session.get_inputs()[0].shape[1:]]
    def decode_request(self, request):
        return np.asarray(request["input"], dtype=np.float32).reshape(self.shape)
    def batch(self, inputs):
        return np.stack(inputs)
    def predict(self, x):
        return self.session.run(None, {"input": x})[0]
    def unbatch(self, output):
        return list(output)
    def encode_response(self, output):
        return {"scores": output.tolist()}

if __name__ == "__main__":
    ls.LitServer(Api(max_batch_size=64, batch_timeout=0.001), accelerator="cpu").run(port=int(sys.argv[1]),
                                                                                       generate_client_file=False)
"""

MLSERVER_MODEL = """
import numpy as np, onnxruntime
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

class OnnxModel(MLModel):
    async def load(self):
        self.session = onnxruntime.InferenceSession(self.settings.parameters.uri, providers=["CPUExecutionProvider"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        scores = self.session.run(None, {"input": x})[0]
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("scores", scores)])
"""

WRK_SCRIPT = """
wrk.method = "POST"
local f = io.open(os.getenv("BODY"), "rb"); wrk.body = f:read("*a"); f:close()
wrk.headers["Content-Type"] = os.getenv("TYPE")
local header = os.getenv("HEADER_LENGTH")
if header ~= "" then wrk.headers["Inference-Header-Content-Length"] = header end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def started(command: list[str], ready: str, cwd: str | None = None) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(ready, timeout=1)
            return process
        except urllib.error.HTTPError:
            return process  # it answers: up
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{command} exited with {process.returncode}") from None
            time.sleep(0.2)
    raise RuntimeError(f"{command} did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def wrk(url: str, body: bytes, connections: int, seconds: float, kind: str = "application/json",
        header: int | None = None) -> tuple[float, float, float, int]:  # fmt: skip
    """(requests/s, p50 ms, p99 ms, non-2xx answers) of single-image requests at ``connections``."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "body").write_bytes(body)
        (Path(tmp) / "post.lua").write_text(WRK_SCRIPT)
        env = {**os.environ, "BODY": str(Path(tmp) / "body"), "TYPE": kind, "HEADER_LENGTH": str(header or "")}
        command = ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
                   "--latency", "-s", str(Path(tmp) / "post.lua"), url]  # fmt: skip
        out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout

    def ms(label: str) -> float:
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rate, ms("50"), ms("99"), int(bad.group(1)) if bad else 0


def in_process_gain(onnx: Path, shape: tuple[int, ...]) -> float:
    """onnxruntime's images/s at batch 64 over batch 1, best of three rounds each."""
    session = onnxruntime.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    rates = {}
    for batch in (1, 64):
        x = np.random.default_rng(0).standard_normal((batch, *shape), dtype=np.float32)
        session.run(None, {"input": x})
        best = 0.0
        for _ in range(3):
            start, n = time.perf_counter(), 0
            while time.perf_counter() - start < 0.5:
                session.run(None, {"input": x})
                n += batch
            best = max(best, n / (time.perf_counter() - start))
        rates[batch] = best
    return rates[64] / rates[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cnn32:mnist", "cifar_seq:cifar10"])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--peers", help="a Python with litserve and mlserver installed (see above)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("needs wrk: apt-get install wrk")
    print(describe())
    zoo_cmd = [sys.executable, "-m", "zoo", "serve"]
    for given in args.models:
        (model,) = zoo.serving.load_models([given]).values()  # exported and proved into the cache once
        shape = model.card.input_shape
        x = np.random.default_rng(1).standard_normal((1, *shape), dtype=np.float32)
        head = {"inputs": [{"name": "input", "shape": [1, *shape], "datatype": "FP32"}]}
        as_json = json.dumps({"inputs": [{**head["inputs"][0], "data": x.ravel().tolist()}]}).encode()
        binary_head = json.dumps({"inputs": [{**head["inputs"][0], "parameters": {"binary_data_size": x.nbytes}}],
                                  "parameters": {"binary_data_output": True}}).encode()  # fmt: skip
        gain = in_process_gain(model.source, shape)
        print(
            f"\n{model.name} ({'x'.join(map(str, shape))}): onnxruntime in-process, batch 64 over batch 1: {gain:.2f}x"
        )
        print(f"{'server':<28} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
        results: dict[tuple[str, int], float] = {}

        def row(name: str, c: int, figures: tuple[float, float, float, int], results: dict = results) -> None:
            results[name, c] = figures[0]
            print(f"{name:<28} {c:>4} {figures[0]:>9,.0f} {figures[1]:>8.2f} {figures[2]:>8.2f} {figures[3]:>6}")

        servers: list[tuple[str, list[str], str, str, bytes, str, int | None, str | None]] = []
        for label, batch in (("zoo batching", "64"), ("zoo no batching", "1")):
            command = [*zoo_cmd, str(model.source), "--max-batch-size", batch, "--port", "{port}"]
            servers.append((f"{label} json", command, "/v2/health/ready", f"/v2/models/{model.name}/infer",
                            as_json, "application/json", None, None))  # fmt: skip
            servers.append((f"{label} binary", command, "/v2/health/ready", f"/v2/models/{model.name}/infer",
                            binary_head + x.tobytes(), "application/octet-stream", len(binary_head), None))  # fmt: skip
        servers.append(("null endpoint (same stack)", [sys.executable, "-c", NULL_APP, "{port}"], "/null", "/null",
                        as_json, "application/json", None, None))  # fmt: skip
        servers.append(("null endpoint (plain ASGI)", [sys.executable, "-c", ASGI_NULL_APP, "{port}"], "/", "/null",
                        as_json, "application/json", None, None))  # fmt: skip
        servers.append(("naive handler (same stack)", [sys.executable, "-c", NAIVE_APP, "{port}", str(model.source)],
                        "/infer", "/infer", as_json, "application/json", None, None))  # fmt: skip
        if args.peers:
            script = Path(tempfile.mkdtemp()) / "litserve_app.py"  # LitServe's worker processes need a file to start
            script.write_text(LITSERVE_APP)
            lit = [args.peers, str(script), "{port}", str(model.source)]
            plain = json.dumps({"input": x.ravel().tolist()}).encode()
            servers.append(("litserve json", lit, "/health", "/predict", plain, "application/json", None, None))
            mlserver = str(Path(args.peers).with_name("mlserver"))
            servers.append(("mlserver json", [mlserver, "start", "."], "/v2/health/ready",
                            "/v2/models/m/infer", as_json, "application/json", None, "mlserver"))  # fmt: skip
        for name, command, ready, path, body, kind, header, folder in servers:
            port = free_port()
            cwd = None
            if folder == "mlserver":
                cwd = tempfile.mkdtemp()
                (Path(cwd) / "model.py").write_text(textwrap.dedent(MLSERVER_MODEL))
                (Path(cwd) / "settings.json").write_text(json.dumps({"http_port": port, "grpc_port": free_port(),
                                                                     "metrics_port": free_port(), "debug": False,
                                                                     "parallel_workers": 0}))  # fmt: skip
                (Path(cwd) / "model-settings.json").write_text(json.dumps({
                    "name": "m", "implementation": "model.OnnxModel", "max_batch_size": 64, "max_batch_time": 0.001,
                    "parameters": {"uri": str(model.source)}}))  # fmt: skip
            process = started([c.replace("{port}", str(port)) for c in command], f"http://127.0.0.1:{port}{ready}",
                              cwd)  # fmt: skip
            try:
                for c in args.concurrency:
                    row(name, c, wrk(f"http://127.0.0.1:{port}{path}", body, c, args.seconds, kind, header))
            finally:
                stop(process)
                if cwd:
                    shutil.rmtree(cwd, ignore_errors=True)
        top = max(args.concurrency)
        for fmt in ("json", "binary"):
            gained = results[f"zoo batching {fmt}", top] / results[f"zoo no batching {fmt}", top]
            print(f"batching gain at {top} ({fmt}): {gained:.2f}x, {(gained - 1) / max(gain - 1, 1e-9):.0%} of the "
                  f"in-process gain {gain:.2f}x")  # fmt: skip
        null = results["null endpoint (same stack)", top]
        print(f"zoo binary at {top}: {results['zoo batching binary', top] / null:.0%} of the null endpoint's rate "
              f"({results['zoo batching binary', top] / results['null endpoint (plain ASGI)', top]:.0%} of plain "
              f"ASGI's)")  # fmt: skip
        naive = results["naive handler (same stack)", top]
        print(f"zoo json at {top}: {results['zoo batching json', top] / naive:.2f}x the naive handler's rate")
        peers = {n: results[n, top] for n in ("litserve json", "mlserver json") if (n, top) in results}
        if peers:
            best = max(peers, key=peers.__getitem__)
            print(
                f"zoo json at {top} over the best peer ({best}): {results['zoo batching json', top] / peers[best]:.2f}x"
            )


if __name__ == "__main__":
    main()
