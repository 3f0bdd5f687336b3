"""What machine a benchmark ran on: CPU model, the vector features that change its speed, threads and versions."""

from __future__ import annotations


def describe() -> str:
    """One line: the machine as published weights record it (zoo.machine.describe_machine), and the versions."""
    import onnxruntime
    import torch

    from zoo.machine import describe_machine

    return (f"{describe_machine(torch.get_num_threads())}; torch {torch.__version__}, "
            f"onnxruntime {onnxruntime.__version__}")  # fmt: skip
