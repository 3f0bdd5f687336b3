"""Built-in plugin: the safetensors, TorchScript, ONNX and torch.export (.pt2) formats, each with its own runtime."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zoo
from zoo import Exporter
from zoo.card import decode, encode, parse_json_value

if TYPE_CHECKING:
    import torch
    from torch import nn

    from zoo.prediction import Run

META_FILE = "zoo.json"  # the metadata's name inside TorchScript and .pt2 archives


# safetensors: zoo's own checkpoint format; proved by building a fresh model from the file's card.
def write_safetensors(model: nn.Module, example: torch.Tensor, meta: dict[str, Any], path: Path, opset: int) -> None:
    from zoo import checkpoint
    from zoo.card import ModelCard

    checkpoint.save(path, model.state_dict(), ModelCard.from_json(meta, path))


def run_safetensors(path: Path) -> tuple[Run, dict[str, Any]]:
    from zoo.inference import load_model
    from zoo.prediction import torch_runner

    model, card = load_model(path)
    return torch_runner(model), card.to_json()


# TorchScript: deprecated in PyTorch 2.14 (torch.jit.trace raises FutureWarning); kept for existing C++ users.
def write_torchscript(model: nn.Module, example: torch.Tensor, meta: dict[str, Any], path: Path, opset: int) -> None:
    import torch

    with warnings.catch_warnings():  # each torch.jit call warns that TorchScript is deprecated: said once, in NOTICE
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        traced = torch.jit.trace(model, example)  # type: ignore[no-untyped-call]
        torch.jit.save(traced, str(path), _extra_files={META_FILE: json.dumps(meta)})


def run_torchscript(path: Path) -> tuple[Run, dict[str, Any]]:
    import torch

    from zoo.prediction import torch_runner

    files = {META_FILE: ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        module = torch.jit.load(str(path), _extra_files=files)  # type: ignore[no-untyped-call]
    return torch_runner(module.eval()), parse_json_value(path, META_FILE, files[META_FILE])


# ONNX: the TorchScript-based exporter, chosen on purpose (tests/benchmarks/export.py): it needs no
# onnxscript, exports in tens of milliseconds, and writes one self-contained file with a dynamic batch axis.
def write_onnx(model: nn.Module, example: torch.Tensor, meta: dict[str, Any], path: Path, opset: int) -> None:
    import onnx
    import torch

    with warnings.catch_warnings():  # the legacy exporter is chosen on purpose: its deprecation notices are known
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["scores"],
            opset_version=opset,
            dynamic_axes={"input": {0: "batch"}, "scores": {0: "batch"}},
            dynamo=False,
        )
    proto = onnx.load(str(path))
    for key, value in encode(meta).items():  # as in a safetensors file: readable by any ONNX tool
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def run_onnx(path: Path) -> tuple[Run, dict[str, Any]]:
    """Checked with onnx's full checker, then run by onnxruntime on the CPU.

    Only self-contained files load: external data names other files to read, which a model file may not choose.
    """
    import onnx
    import onnxruntime
    from onnx.external_data_helper import uses_external_data

    proto = onnx.load(str(path), load_external_data=False)
    if any(uses_external_data(t) for t in onnx.external_data_helper._get_all_tensors(proto)):
        raise zoo.ZooError(
            f"{path} keeps its weights as external data in other files; zoo reads only "
            f"self-contained ONNX files, as `zoo export` writes them"
        )
    onnx.checker.check_model(proto, full_check=True)
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: Any) -> Any:
        return session.run(None, {name: x})[0]

    return run, decode(session.get_modelmeta().custom_metadata_map, path)


# torch.export: TorchScript's successor; an ExportedProgram with a dynamic batch dimension.
def write_pt2(model: nn.Module, example: torch.Tensor, meta: dict[str, Any], path: Path, opset: int) -> None:
    import torch

    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, str(path), extra_files={META_FILE: json.dumps(meta)})


def run_pt2(path: Path) -> tuple[Run, dict[str, Any]]:
    import torch

    from zoo.prediction import torch_runner

    files = {META_FILE: ""}
    program = torch.export.load(str(path), extra_files=files)
    return torch_runner(program.module()), parse_json_value(path, META_FILE, files[META_FILE])


@zoo.hookimpl
def register_exporters(register: Callable[[Exporter], None]) -> None:
    here = "zoo.exporters.formats"
    register(
        Exporter(
            name="safetensors",
            suffix=".safetensors",
            writer=f"{here}:write_safetensors",
            runner=f"{here}:run_safetensors",
            exact=True,
            summary="weights and metadata; reloaded into a fresh model, outputs bit-identical",
        )
    )
    register(
        Exporter(
            name="torchscript",
            suffix=".torchscript.pt",
            writer=f"{here}:write_torchscript",
            runner=f"{here}:run_torchscript",
            aliases=("jit",),
            summary="traced TorchScript (deprecated by PyTorch; prefer pt2)",
            runs_code=True,
            notice="TorchScript is deprecated in PyTorch 2.14; the .pt2 file (torch.export) is its "
            "successor and loads with torch.export.load",
        )
    )
    register(
        Exporter(
            name="onnx",
            suffix=".onnx",
            writer=f"{here}:write_onnx",
            runner=f"{here}:run_onnx",
            summary="ONNX with a dynamic batch axis, proved with onnxruntime",
        )
    )
    register(
        Exporter(
            name="pt2",
            suffix=".pt2",
            writer=f"{here}:write_pt2",
            runner=f"{here}:run_pt2",
            aliases=("torch_export",),
            summary="torch.export program, TorchScript's successor",
            runs_code=True,
        )
    )
