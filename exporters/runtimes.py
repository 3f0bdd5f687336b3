"""The built-in runtimes: onnxruntime and OpenVINO (where installed) for ONNX files, PyTorch for zoo's checkpoints."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zoo
from zoo import Runtime
from zoo.errors import ZooError

from .formats import load_checked_onnx

Run = Callable[[Any], Any]
ONNX_FORMATS = ("onnx", "onnx_fp16", "onnx_int8", "onnx_int8_qat")
OPENVINO_PRECISION = {"float32": "f32", "bfloat16": "bf16", "float16": "f16", "int8": "f32"}
"""OpenVINO's inference precision for each precision zoo asks for: an int8 file's quantized layers run in int8
whatever the hint, and its other layers in float32."""


def load_onnxruntime(path: Path, precision: str, threads: int) -> Run:
    """onnxruntime's CPU provider, every graph optimisation on and ``threads`` threads: it computes float32 graphs in
    float32 on x86 (its bfloat16 fast-math exists on Arm alone, off unless asked for)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("mlas.enable_gemm_fastmath_arm64_bfloat16", "0")
    session = onnxruntime.InferenceSession(load_checked_onnx(path).SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])  # fmt: skip
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def load_openvino(path: Path, precision: str, threads: int) -> Run:
    """OpenVINO's CPU plugin with the inference precision set explicitly: left alone, it computes in bfloat16 on
    CPUs that have it, silently changing the scores."""
    import openvino

    core = openvino.Core()
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    wanted = OPENVINO_PRECISION[precision]
    if wanted != "f32" and wanted.upper() not in capabilities:
        raise ZooError(f"OpenVINO cannot compute in {precision} on this CPU (its capabilities: "
                       f"{', '.join(capabilities)}); use openvino:float32")  # fmt: skip
    model = core.read_model(load_checked_onnx(path).SerializeToString(), b"")
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": wanted, "INFERENCE_NUM_THREADS": threads,
                                                 "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"})  # fmt: skip
    got = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    if got != wanted:  # the capability list and the plugin disagreed: what it computes in is what counts
        raise ZooError(f"OpenVINO computes in {got} on this CPU, not {precision}; use openvino:float32")
    request, lock = compiled.create_infer_request(), threading.Lock()  # one request: one call at a time

    def run(x: Any) -> Any:
        with lock:
            return request.infer({0: x})[0].copy()

    return run


def load_torch(path: Path, precision: str, threads: int) -> Run:
    """A zoo checkpoint in PyTorch, channels-last, in inference mode; bfloat16 under autocast."""
    import torch

    from zoo import checkpoint

    torch.set_num_threads(threads)
    model = checkpoint.build(checkpoint.load(path), path).to(memory_format=torch.channels_last)
    bf16 = precision == "bfloat16"

    def run(x: Any) -> Any:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return model(torch.from_numpy(x).contiguous(memory_format=torch.channels_last)).float().numpy()

    return run


def load_torch_file(path: Path, precision: str, threads: int) -> Run:
    """A TorchScript or torch.export file, by its format's own runner, on ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    return zoo.get_registry().exporters["pt2" if path.suffix == ".pt2" else "torchscript"].load(path)[0]


@zoo.hookimpl
def register_runtimes(register: Callable[[Runtime], None]) -> None:
    here = "zoo.exporters.runtimes"
    register(Runtime(name="onnxruntime", formats=ONNX_FORMATS, loader=f"{here}:load_onnxruntime", aliases=("ort",),
                     summary="onnxruntime's CPU provider; float32", source="https://onnxruntime.ai"))  # fmt: skip
    register(Runtime(name="torch", formats=("safetensors",), loader=f"{here}:load_torch", aliases=("pytorch",),
                     precisions=("float32", "bfloat16"), source="https://pytorch.org",
                     summary="PyTorch eager, channels-last; float32, or bfloat16 under autocast"))  # fmt: skip
    register(Runtime(name="torch_script", formats=("torchscript", "pt2"), loader=f"{here}:load_torch_file",
                     summary="TorchScript and torch.export files in PyTorch; float32"))  # fmt: skip
    if importlib.util.find_spec("openvino") is not None:  # the optional extra: zoo-classifiers[openvino]
        register(Runtime(name="openvino", formats=ONNX_FORMATS, loader=f"{here}:load_openvino", aliases=("ov",),
                         precisions=("float32", "bfloat16", "float16"), source="https://docs.openvino.ai",
                         summary="OpenVINO's CPU plugin; float32, or bfloat16, float16 on CPUs with them"))  # fmt: skip
