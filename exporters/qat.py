"""onnx_int8_qat's writer: an int8 file of a copy fine-tuned by quantization-aware distillation from the float model.

Imported only when such a file is written (the format is registered in formats.py), so it may import torch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional
from torch.nn.utils import parametrize

from .formats import fold_batch_norms, write_onnx_int8
from .runtimes import load_onnxruntime

__all__ = ["fine_tune_for_int8", "write_onnx_int8_qat"]

# Plain int8 (onnx_int8) rounds the float weights and activations as they are, and lenet_bn and cifar_seq lose too
# many top-1 matches that way.  Here a copy of the model is first trained with that rounding simulated
# (quantization-aware training: fake quantization, gradients passed straight through the rounding) to give the
# float model's own scores.  The float model is the teacher, so no labels are needed and the file is still proved
# against the unchanged model.  What is rounded, and at what scale, is read off onnxruntime's own int8 graph of
# the copy, re-made each epoch, so the training rounds as the file will; the tuned copy is quantized as onnx_int8.
QAT_EPOCHS = 4
QAT_BATCH = 128
QAT_LR = 1e-4
CALIBRATION = 256  # the first images of `example`, which onnx_int8 calibrates on too
HELD_OUT = 2048  # the last images of `example`: not trained on, they pick the epoch whose file agrees best


def write_onnx_int8_qat(model: nn.Module, example: torch.Tensor, meta: dict[str, Any], path: Path, opset: int) -> None:
    write_onnx_int8(fine_tune_for_int8(model, example, opset=opset), example[:CALIBRATION], meta, path, opset)


def fine_tune_for_int8(model: nn.Module, images: torch.Tensor, *, opset: int, epochs: int = QAT_EPOCHS,
                       seed: int = 0) -> nn.Module:  # fmt: skip
    """A copy of ``model`` (batch norms folded), its weights fine-tuned on ``images`` to give ``model``'s scores
    with every weight and activation rounded as onnxruntime's int8 file of it rounds them.

    Of the copies after each epoch (and the untuned one), the one whose int8 file agrees best with ``model`` on
    the held-out images is returned: fine-tuning never makes the file worse there than onnx_int8's."""
    held = min(HELD_OUT, len(images) // 4)
    train, check = images[: len(images) - held], images[len(images) - held :]
    with torch.no_grad():
        model.eval()
        targets = torch.cat([functional.log_softmax(model(b), 1) for b in torch.split(train, 256)])
        wanted = torch.cat([model(b).argmax(1) for b in torch.split(check, 256)]).numpy()
    student = fold_batch_norms(model)
    modules = dict(student.named_modules())
    weights, activations, agreement = _int8_file(student, images, check, wanted, opset)
    best = agreement, {k: v.clone() for k, v in student.state_dict().items()}  # training changes them in place
    layers = [modules[name] for name in weights]
    for layer in layers:
        parametrize.register_parametrization(layer, "weight", WeightRounding())
    optimizer = torch.optim.Adam([p for layer in layers for p in layer.parameters()], lr=QAT_LR)
    steps = epochs * -(-len(train) // QAT_BATCH)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        hooks = [_round(modules[name], name == "", *rounding) for name, rounding in activations.items()]
        for batch in torch.split(torch.randperm(len(train), generator=generator), QAT_BATCH):
            scores = functional.log_softmax(student(train[batch]), 1)
            loss = functional.kl_div(scores, targets[batch], log_target=True, reduction="batchmean")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
        for hook in hooks:
            hook.remove()
        tuned = _unrounded(student, model)
        _, activations, agreement = _int8_file(tuned, images, check, wanted, opset)  # calibrated again
        if agreement > best[0]:
            best = agreement, tuned.state_dict()
    chosen = fold_batch_norms(model)
    chosen.load_state_dict(best[1])
    return chosen


def _unrounded(student: nn.Module, model: nn.Module) -> nn.Module:
    """``model`` folded as ``student`` is, with ``student``'s float weights, not rounded: onnxruntime rounds them."""
    plain = fold_batch_norms(model)
    weights = {k.replace(".parametrizations.weight.original", ".weight"): v for k, v in student.state_dict().items()}
    plain.load_state_dict(weights)
    return plain


def _int8_file(model: nn.Module, images: torch.Tensor, check: torch.Tensor, wanted: Any,
               opset: int) -> tuple[list[str], dict[str, tuple[float, int]], float]:  # fmt: skip
    """onnxruntime's int8 file of ``model``, calibrated on ``images``: the layers whose weights it quantizes; the
    activations it rounds, each named by the module that outputs it ("" for the model's input), with scale and
    zero point; and the share of ``check`` images on which its top class is ``wanted``."""
    import onnx
    from onnx import numpy_helper

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "int8.onnx"
        write_onnx_int8(model, images[:CALIBRATION], {}, path, opset)
        graph = onnx.load(str(path)).graph
        run = load_onnxruntime(path, "int8", torch.get_num_threads())
        runs = [run(b.numpy()) for b in torch.split(check, 256)]
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    weights: list[str] = []
    activations: dict[str, tuple[float, int]] = {}
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        tensor, scale, zero_point = node.input[:3]
        if node.op_type == "DequantizeLinear" and tensor.endswith(".weight_quantized"):
            weights.append(tensor.removesuffix(".weight_quantized"))
        elif node.op_type == "QuantizeLinear":
            # torch names an output /<path>/<module.name>/<Op>_output_0; a tensor quantized twice keeps its first
            name = "" if tensor == graph.input[0].name else tensor.split("/")[-2] if tensor.count("/") >= 2 else None
            if name is not None:
                activations.setdefault(name, (float(constants[scale]), int(constants[zero_point])))
    top = np.concatenate(runs).argmax(1) if runs else np.zeros(0)
    return weights, activations, float((top == wanted).mean()) if len(wanted) else 0.0


def _round(module: nn.Module, input: bool, scale: float, zero_point: int) -> Any:
    """A hook rounding ``module``'s output (its input, with ``input``) to int8 at this scale and zero point."""

    def rounding(x: torch.Tensor) -> torch.Tensor:
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, -128, 127)

    if input:
        return module.register_forward_pre_hook(lambda module, args: (rounding(args[0]),))
    return module.register_forward_hook(lambda module, args, out: rounding(out))


class WeightRounding(nn.Module):
    """Symmetric per-tensor int8 rounding of a weight, as onnxruntime's QInt8 weights: scale = max |w| / 127."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        scale = float(weight.detach().abs().max().clamp_min(1e-8)) / 127
        return torch.fake_quantize_per_tensor_affine(weight, scale, 0, -127, 127)
