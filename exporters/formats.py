"""Built-in plugin: the safetensors, TorchScript, ONNX and torch.export (.pt2) formats, each with its own runtime."""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zoo
from zoo import Exporter
from zoo.card import MAX_META_BYTES, decode, encode, parse_json_value
from zoo.registry import MAX_CALIBRATION_IMAGES

from .portable import describe_nodes, drop_unused_opsets, explicit_pads

if TYPE_CHECKING:
    import torch
    from torch import nn

    from zoo.runtimes import Run

META_FILE = "zoo.json"  # the metadata's name inside TorchScript and .pt2 archives
# TorchScript and .pt2 archives are built in memory and written by Python: torch's C++ zip writer aborts the
# process (std::terminate) when the disk fills, where Python's write raises an error zoo can name.


# safetensors: zoo's own checkpoint format; proved by building a fresh model from the file's card.
def write_safetensors(model: nn.Module, example: torch.Tensor, meta: dict[str, Any], path: Path, opset: int) -> None:
    from zoo import checkpoint
    from zoo.card import ModelCard

    checkpoint.save(path, model.state_dict(), ModelCard.from_json(meta, path), export=meta.get("export"))


def read_safetensors(path: Path) -> dict[str, Any]:
    from zoo import checkpoint

    return checkpoint.metadata(path)


def run_safetensors(path: Path) -> tuple[Run, dict[str, Any]]:
    from zoo import checkpoint
    from zoo.runtimes import torch_runner

    saved = checkpoint.load(path)
    meta = saved.card.to_json() | ({"export": saved.export} if saved.export else {})
    return torch_runner(checkpoint.build(saved, path)), meta


# TorchScript: deprecated in PyTorch 2.14 (torch.jit.trace raises FutureWarning); kept for existing C++ users.
def write_torchscript(model: nn.Module, example: torch.Tensor, meta: dict[str, Any], path: Path, opset: int) -> None:
    import torch

    with warnings.catch_warnings():  # each torch.jit call warns that TorchScript is deprecated: said once, in NOTICE
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        traced = torch.jit.trace(model, example)  # type: ignore[no-untyped-call]
        archive = io.BytesIO()
        torch.jit.save(traced, archive, _extra_files={META_FILE: json.dumps(meta)})
    path.write_bytes(archive.getvalue())


MAX_ARCHIVE_BYTES = 1 << 30
"""What a TorchScript or .pt2 archive may hold uncompressed: checked in its zip directory before anything is read."""


def _check_archive(path: Path) -> None:
    """Refuse an archive that would unpack to more than MAX_ARCHIVE_BYTES (torch allocates each record whole, at
    the size the zip directory declares), before torch opens it."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise zoo.ZooError(f"{path} is not a readable zip archive ({exc}); export it again") from None
    if total > MAX_ARCHIVE_BYTES:
        raise zoo.ZooError(f"{path} would unpack to {total:,} bytes, more than the {MAX_ARCHIVE_BYTES:,} zoo allows "
                           f"a model archive; it is no model zoo wrote")  # fmt: skip


def read_archive(path: Path) -> dict[str, Any]:
    """The metadata of a TorchScript or .pt2 archive, read from the zip as data: torch never opens the file."""
    import zipfile

    _check_archive(path)
    with zipfile.ZipFile(path) as archive:
        entry = next((i for i in archive.infolist() if i.filename.endswith(f"/extra/{META_FILE}")), None)
        if entry is None:
            return {}
        if entry.file_size > MAX_META_BYTES:
            raise zoo.ZooError(f"{path}: its {META_FILE} is {entry.file_size:,} bytes (at most {MAX_META_BYTES:,}); "
                               f"use a file written by zoo")  # fmt: skip
        meta = parse_json_value(path, META_FILE, archive.read(entry).decode("utf-8", errors="replace"))
    if not isinstance(meta, dict):
        raise zoo.ZooError(f"{path}: its {META_FILE} is not a JSON object; use a file written by zoo")
    return meta


def run_torchscript(path: Path) -> tuple[Run, dict[str, Any]]:
    import torch

    from zoo.runtimes import torch_runner

    _check_archive(path)
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
    explicit_pads(proto)
    describe_nodes(proto, model)
    _save_onnx(proto, meta, path)


def _save_onnx(proto: Any, meta: dict[str, Any], path: Path) -> None:
    """Save ``proto`` to ``path`` with ``meta`` as its metadata, as in a safetensors file: readable by any ONNX tool.
    The graph is named after the architecture; values that are not set are left out, not written as ``null``."""
    import onnx

    proto.graph.name = meta.get("architecture", proto.graph.name)
    drop_unused_opsets(proto)
    del proto.metadata_props[:]
    for key, value in encode({k: v for k, v in meta.items() if v is not None}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with each batch norm that follows a convolution or linear layer in an ``nn.Sequential``
    folded into that layer, so that it is quantized as one layer (onnxruntime folds a batch norm after a
    convolution itself, not one after a linear layer)."""
    import copy

    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    folded = copy.deepcopy(model).eval()
    for seq in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        for i in range(1, len(seq)):
            layer, norm = seq[i - 1], seq[i]
            if isinstance(layer, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                seq[i - 1], seq[i] = fuse_conv_bn_eval(layer, norm), nn.Identity()
            elif isinstance(layer, nn.Linear) and isinstance(norm, nn.BatchNorm1d):
                seq[i - 1], seq[i] = fuse_linear_bn_eval(layer, norm), nn.Identity()
    return folded


# onnx_int8: static quantization by onnxruntime (QDQ, int8 weights and activations, the activations' ranges
# calibrated on the training images zoo hands over as `example`); approximate, so proved on the test split.
# One scale per tensor: per-channel weights lost lenet_bn 8 points (agreement 87.8% against 98.8%) and gained the
# MNIST nets nothing (cnn6 99.60% against 99.87%, cnn32 99.80% against 99.77%, first 3,000 test images).
# The output layer stays float32: quantizing its scores clamped them to the calibrated range and rounded them to
# ~240 values, which made ties for the top class. Opset 19 (INT8_OPSET): an earlier DequantizeLinear is refused
# by onnx's reference evaluator.
INT8_OPSET = 19


def write_onnx_int8(model: nn.Module, example: torch.Tensor, meta: dict[str, Any], path: Path, opset: int) -> None:
    import logging
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.batches = iter([{"input": example[i : i + 32].numpy()} for i in range(0, len(example), 32)])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.batches, None)

    silenced = logging.root.manager.disable
    logging.disable(logging.WARNING)  # onnxruntime.quantization logs advice to the root logger, for its developers
    try:
        with tempfile.TemporaryDirectory() as tmp:
            float32, prepared, quantized = (Path(tmp) / f"{n}.onnx" for n in ("float32", "prepared", "int8"))
            write_onnx(fold_batch_norms(model), example[:2], {}, float32, max(opset, INT8_OPSET))
            quant_pre_process(str(float32), str(prepared))  # shape inference and graph optimisation
            quantize_static(str(prepared), str(quantized), Reader(), quant_format=QuantFormat.QDQ, per_channel=False,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=_output_layer(onnx.load(str(prepared))))  # fmt: skip
            proto = onnx.load(str(quantized))
    finally:
        logging.disable(silenced)
    for node in proto.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            node.doc_string = "int8 quantization (onnxruntime.quantization, QDQ)"
    _save_onnx(proto, meta, path)


def _output_layer(proto: Any) -> list[str]:
    """The nodes from the last layer with weights (Conv, Gemm, MatMul) to the graph's output: left unquantized."""
    producers = {out: node for node in proto.graph.node for out in node.output}
    names, node = [], producers.get(proto.graph.output[0].name)
    while node is not None:
        names.append(node.name)
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            break
        node = producers.get(node.input[0])
    return names


# onnx_fp16: weights stored as float16 (half the file), cast to float32 where the graph starts: onnxruntime's CPU
# provider has no float16 arithmetic on x86, so the activations stay float32.  Approximate: the weights are rounded.
def write_onnx_fp16(model: nn.Module, example: torch.Tensor, meta: dict[str, Any], path: Path, opset: int) -> None:
    import tempfile

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    with tempfile.TemporaryDirectory() as tmp:
        float32 = Path(tmp) / "float32.onnx"
        write_onnx(model, example[:2], {}, float32, opset)
        proto = onnx.load(str(float32))
    graph, casts = proto.graph, []
    for tensor in graph.initializer:
        if tensor.data_type == TensorProto.FLOAT:
            name = tensor.name
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), f"{name}.fp16"))
            casts.append(helper.make_node("Cast", [tensor.name], [name], f"{name}.to_float32", to=TensorProto.FLOAT,
                                          doc_string=f"{name}, stored as float16, computed in float32"))  # fmt: skip
    nodes = [*casts, *graph.node]  # the casts read only initializers, so they go first in topological order
    del graph.node[:]
    graph.node.extend(nodes)
    _save_onnx(proto, meta, path)


def read_onnx(path: Path) -> dict[str, Any]:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise zoo.ZooError(f"{path} is not a readable ONNX file ({exc}); export it with `zoo export`") from None
    return decode({entry.key: entry.value for entry in proto.metadata_props}, path)


def load_checked_onnx(path: Path) -> Any:
    """The ONNX file as a ModelProto, once onnx's checker and zoo's bounds (no external data, no control flow, sizes
    known) have passed it: what every runtime of ONNX files reads."""
    import onnx

    from zoo.onnx_guard import check_onnx

    proto = onnx.load(str(path), load_external_data=False)
    check_onnx(proto, path)
    onnx.checker.check_model(proto)
    return proto


def run_onnx(path: Path) -> tuple[Run, dict[str, Any]]:
    """Checked with onnx's checker and zoo's bounds (no external data, no control flow, sizes known), then run by
    onnxruntime on the CPU."""
    import onnxruntime

    proto = load_checked_onnx(path)
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: Any) -> Any:
        return session.run(None, {name: x})[0]

    return run, decode(session.get_modelmeta().custom_metadata_map, path)


# torch.export: TorchScript's successor; an ExportedProgram with a dynamic batch dimension.
def write_pt2(model: nn.Module, example: torch.Tensor, meta: dict[str, Any], path: Path, opset: int) -> None:
    import torch

    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    archive = io.BytesIO()
    torch.export.save(program, archive, extra_files={META_FILE: json.dumps(meta)})
    path.write_bytes(archive.getvalue())


def run_pt2(path: Path) -> tuple[Run, dict[str, Any]]:
    import torch

    from zoo.runtimes import torch_runner

    _check_archive(path)
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
            reader=f"{here}:read_safetensors",
            proof="exact",
            summary="weights and metadata; reloaded into a fresh model, outputs bit-identical",
        )
    )
    register(
        Exporter(
            name="torchscript",
            suffix=".torchscript.pt",
            writer=f"{here}:write_torchscript",
            runner=f"{here}:run_torchscript",
            reader=f"{here}:read_archive",
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
            reader=f"{here}:read_onnx",
            summary="ONNX with a dynamic batch axis, proved with onnxruntime",
        )
    )
    register(
        Exporter(
            name="onnx_int8",
            suffix=".int8.onnx",
            writer=f"{here}:write_onnx_int8",
            runner=f"{here}:run_onnx",
            reader=f"{here}:read_onnx",
            aliases=("int8",),
            proof="approximate",
            precision="int8",
            min_opset=INT8_OPSET,
            summary="ONNX quantized to int8 (static, calibrated on training images); a quarter to a third of the size",
        )
    )
    register(
        Exporter(
            name="onnx_int8_qat",
            suffix=".int8_qat.onnx",
            writer="zoo.exporters.qat:write_onnx_int8_qat",
            runner=f"{here}:run_onnx",
            reader=f"{here}:read_onnx",
            aliases=("int8_qat", "qat"),
            proof="approximate",
            precision="int8",
            min_opset=INT8_OPSET,
            trains=True,
            calibration_images=MAX_CALIBRATION_IMAGES,  # the training images it is fine-tuned on
            summary="ONNX int8 after quantization-aware fine-tuning toward the float model, for nets whose "
            "onnx_int8 is refused; slower to write",
        )
    )
    register(
        Exporter(
            name="onnx_fp16",
            suffix=".fp16.onnx",
            writer=f"{here}:write_onnx_fp16",
            runner=f"{here}:run_onnx",
            reader=f"{here}:read_onnx",
            aliases=("fp16",),
            proof="approximate",
            precision="float16",
            summary="ONNX with float16 weights, computed in float32; half the size",
        )
    )
    register(
        Exporter(
            name="pt2",
            suffix=".pt2",
            writer=f"{here}:write_pt2",
            runner=f"{here}:run_pt2",
            reader=f"{here}:read_archive",
            aliases=("torch_export",),
            summary="torch.export program, TorchScript's successor",
            runs_code=True,
        )
    )
