"""Where a training step runs under bfloat16 autocast: on CUDA (``training.autocast_bf16``, on by default) and on a
CPU as ``training.cpu_autocast`` says ("off" by default; "auto": where the CPU multiplies bfloat16 in hardware,
``towers.losses.fused.fast_bfloat16``; "bf16": on any CPU). Scoring, embedding and the ONNX export always run in
float32."""

from __future__ import annotations

import torch

from towers.config import TrainerConfig
from towers.losses.fused import fast_bfloat16


def autocast_enabled(device: torch.device, config: TrainerConfig) -> bool:
    """Whether the training steps on ``device`` run under bfloat16 autocast."""
    if device.type == "cuda":
        return bool(config.autocast_bf16)
    if device.type == "cpu":
        return config.cpu_autocast == "bf16" or (config.cpu_autocast == "auto" and fast_bfloat16(device))
    return False


def autocast_device_type(device: torch.device) -> str:
    """The ``torch.autocast`` device type of ``device`` ("cpu" for devices autocast does not know)."""
    return device.type if device.type in ("cuda", "cpu") else "cpu"
