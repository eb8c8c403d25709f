"""Device and precision selection shared by every model: ``auto|cpu|cuda|cuda:N`` and ``fp32|bf16|fp16`` autocast.

torch is imported inside the functions, so that configs which only name the choices (extraction's, whose
default HOG detector never needs torch) do not load it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
from pathlib import Path
from typing import TYPE_CHECKING, ContextManager

from facelab.core.errors import FacelabError

if TYPE_CHECKING:
    import torch

# "cuda:N" stands for any GPU index (core.config's option choices read a trailing ":N" so)
DEVICES = ("auto", "cpu", "cuda", "cuda:N")
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICE_HELP = ("auto (the first GPU when there is one, else the CPU), cpu, cuda or cuda:N (GPU number N); under "
               "torchrun each process takes the GPU of its LOCAL_RANK")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` (the first GPU when there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; a GPU that is
    not there is refused in one line."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise FacelabError(f"unknown device {name!r}; use one of {', '.join(DEVICES)}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FacelabError(f"--device {name} was asked for but no CUDA GPU is visible; use --device cpu or auto")
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise FacelabError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s), "
                           f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device


def device_name(device: torch.device) -> str:
    """What a measurement ran on, for benchmark records: the GPU's name, or the CPU's model and which of
    its bf16 units it has (CPU figures differ more between this VM's hosts than between runs on one, and
    bf16 ones most: AMX's tile unit runs bf16 convolutions several times faster than AVX512-BF16 alone)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = ""
    with contextlib.suppress(OSError):
        cpuinfo = Path("/proc/cpuinfo").read_text()
    return cpu_description(cpuinfo, platform.processor() or platform.machine(), os.cpu_count())


def cpu_description(cpuinfo: str, fallback_model: str, cores: int | None) -> str:
    """"<model>, <n> cores[, AVX512-BF16][, AMX-BF16]" from the text of /proc/cpuinfo."""
    found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M)
    flags = set(flags.group(1).split()) if flags else set()
    units = [name for flag, name in (("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX-BF16")) if flag in flags]
    return ", ".join([found.group(1).strip() if found else fallback_model, f"{cores} cores", *units])


def channels_last_pays(device: torch.device) -> bool:
    """Whether convolutions run faster in channels_last layout on ``device``: on GPUs, and on CPUs whose
    vector unit PyTorch drives with AVX512. On an AVX2-only CPU (an AMD EPYC host, 2026-12-02) NCHW was
    the faster layout: Quick96 trained 1.22x and SAEHD df-ud 128 1.13x faster in it, where an AVX512
    host had measured the opposite (docs/performance.md)."""
    import torch

    if device.type == "cuda":
        return True
    capability = torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else ""
    return capability.startswith("AVX512") or "AMX" in capability


def memory_format(channels_last: bool | None, device: torch.device):
    """The layout a network runs in: ``channels_last`` as a config says it, or (None) where it pays."""
    import torch

    use = channels_last_pays(device) if channels_last is None else channels_last
    return torch.channels_last if use else torch.contiguous_format


def autocast(device: torch.device, precision: str) -> ContextManager:
    """Autocast for ``bf16``/``fp16``; a no-op for ``fp32``. fp16 on the CPU is refused (no fast kernels).

    Only the networks run inside it: every trainer computes its losses (SSIM, the gradient penalty, ...)
    in fp32 outside, where bf16's 8-bit mantissa would otherwise turn small differences into noise.
    """
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in PRECISIONS:
        raise FacelabError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise FacelabError("--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A loss scaler that is active only for fp16, where small gradients would underflow."""
    import torch

    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
