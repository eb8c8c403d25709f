"""Device and precision selection shared by every model: ``auto|cpu|cuda`` and ``fp32|bf16|fp16`` autocast."""

from __future__ import annotations

import contextlib
import os
import platform
import re
from pathlib import Path
from typing import ContextManager

import torch

from facelab.core.errors import FacelabError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FacelabError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if name not in DEVICES and not name.startswith("cuda:"):
        raise FacelabError(f"unknown device {name!r}; use one of {', '.join(DEVICES)}")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """What a measurement ran on, for benchmark records: the GPU's name, or the CPU's model and whether it
    has AVX512-BF16 (CPU figures differ more between this VM's hosts than between runs on one)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model, bf16 = platform.processor() or platform.machine(), False
    with contextlib.suppress(OSError):
        cpuinfo = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
        model = found.group(1).strip() if found else model
        bf16 = "avx512_bf16" in cpuinfo
    return f"{model}, {os.cpu_count()} cores" + (", AVX512-BF16" if bf16 else "")


def autocast(device: torch.device, precision: str) -> ContextManager:
    """Autocast for ``bf16``/``fp16``; a no-op for ``fp32``. fp16 on the CPU is refused (no fast kernels)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in _DTYPES:
        raise FacelabError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise FacelabError("--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A loss scaler that is active only for fp16, where small gradients would underflow."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
