"""Where a training step runs under bfloat16 autocast: on CUDA (``training.autocast_bf16``, on by default) and on a
CPU that multiplies bfloat16 in hardware when ``training.cpu_autocast_bf16`` asks for it (off by default: on the
bundled data it is about 1.2x faster on an AVX512-BF16 CPU, ``ops/bench/train_profile.py``). Scoring, embedding and
the ONNX export always run in float32."""

from __future__ import annotations

import warnings

import torch

from towers.config import TrainerConfig
from towers.losses.fused import fast_bfloat16


def autocast_enabled(device: torch.device, config: TrainerConfig) -> bool:
    """Whether the training steps on ``device`` run under bfloat16 autocast (a warning when the config asks for it on
    a CPU without bfloat16 hardware, which then trains in float32)."""
    if device.type == "cuda":
        return bool(config.autocast_bf16)
    if device.type == "cpu" and config.cpu_autocast_bf16:
        if fast_bfloat16(device):
            return True
        warnings.warn("training.cpu_autocast_bf16 is set but this CPU has no bfloat16 instructions (AVX512-BF16 or "
                      "AMX), where bfloat16 is slower than float32: training in float32; set it to false to silence "
                      "this.", RuntimeWarning, stacklevel=2)
    return False


def autocast_device_type(device: torch.device) -> str:
    """The ``torch.autocast`` device type of ``device`` ("cpu" for devices autocast does not know)."""
    return device.type if device.type in ("cuda", "cpu") else "cpu"
