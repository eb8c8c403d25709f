"""Multi-process data-parallel training on torch.distributed, shared by every trainer (swap, XSeg, StarGAN, PFE).

``torchrun --nproc_per_node N -m facelab train ...`` (``--gpus N`` starts exactly that) runs the command in N
processes. torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`join` makes the processes one
group, NCCL between GPUs (process ``LOCAL_RANK`` on ``cuda:LOCAL_RANK``) and gloo on the CPU, and each
trainer wraps its networks in DistributedDataParallel (:meth:`Group.wrap`), which averages the gradients
during the backward pass. Started without torchrun, a trainer gets a one-process :class:`Group` whose
methods do nothing, so the single-GPU path is the same code.

What makes an N-process run with ``--batch-size B`` equal a one-process run with ``--batch-size N*B`` (same
seed, to float rounding):

- the global batch of N*B samples is a function of (seed, iteration) alone and process ``r`` trains on its
  rows ``r*B .. (r+1)*B`` (:class:`Shard`): every random draw is made for the whole global batch in every
  process, the costly work (decoding, warping) only for the process's own rows;
- every loss is a mean over the batch, so the mean of the processes' gradients is the global batch's;
  BatchNorm statistics are taken over all processes (torch's SyncBatchNorm on GPUs; on the CPU, where that
  refuses to run, :class:`CrossProcessBatchNorm`);
- logged losses are averaged over the processes (:meth:`Group.mean`), and whatever ends a run (a
  non-finite loss, Ctrl-C, SIGTERM) ends it in every process at the same step.

The main process (rank 0) alone writes checkpoints, previews, logs and the progress bar; the others wait
for its writes (:meth:`Group.on_main`), because torchrun stops every process as soon as one has ended.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from facelab.core.config import Validated, option
from facelab.core.device import resolve_device
from facelab.core.errors import FacelabError

T = TypeVar("T")
log = logging.getLogger("facelab")


@dataclass(frozen=True)
class Shard:
    """Which rows of each global batch this process trains on (``rank`` of ``world`` processes)."""

    rank: int = 0
    world: int = 1

    def size(self, per_rank: int) -> int:
        """Samples in a global batch when each process takes ``per_rank``."""
        return per_rank * self.world

    def rows(self, per_rank: int) -> slice:
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)


class Group:
    """The processes of one training run, as the trainers use them; one process without torchrun."""

    def __init__(self, device: torch.device, shard: Shard = Shard(), distributed: bool = False):
        self.device, self.shard, self.distributed = device, shard, distributed

    @property
    def world(self) -> int:
        return self.shard.world

    @property
    def is_main(self) -> bool:
        return self.shard.rank == 0

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` as its training steps should call it: in DistributedDataParallel (BatchNorm layers made
        cross-process first) when there is a process group, else itself. Keep the module for saving and
        evaluation; only the steps that take gradients of its parameters go through the wrapper."""
        if not self.distributed:
            return module
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
            module = (nn.SyncBatchNorm.convert_sync_batchnorm(module) if self.device.type == "cuda"
                      else CrossProcessBatchNorm.convert(module))
        return nn.parallel.DistributedDataParallel(
            module, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each value averaged over the processes: the losses of the global batch."""
        if not self.distributed or not values:
            return dict(values)
        total = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return dict(zip(values, (total / self.world).tolist()))

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds in any process (every process gets the same answer)."""
        if not self.distributed:
            return flag
        count = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(count)
        return bool(count.item())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def on_main(self, action: Callable[[], T]) -> T | None:
        """``action()`` in the main process while the others wait for it (their result: None). Used for what
        only rank 0 writes: the others must neither read a checkpoint before it is repaired, nor end before the
        closing save is on disk (torchrun would stop rank 0 in the middle of it)."""
        try:
            return action() if self.is_main else None
        finally:
            self.barrier()

    def collective_failed(self, exc: BaseException) -> FacelabError | None:
        """The one-line error for a failed collective (another process ended: gloo reports the closed
        connection, NCCL a DistError), or None for any other exception."""
        if not self.distributed or not (isinstance(exc, dist.DistError) or "gloo" in str(exc)):
            return None
        # gloo's message starts with its source file and goes on with advice: keep what happened
        text = re.sub(r"^\[[^\]]*\]\s*", "", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        reason = text.split(". ")[0]
        return FacelabError(f"process {self.shard.rank} of {self.world}: another process of this run ended ({reason}); "
                            "stopped without saving, so the last save is kept; see the other processes' messages, "
                            "then run the same command to resume")


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def main_process() -> bool:
    """Whether this process speaks for the run: always without torchrun, rank 0 under it."""
    return int(os.environ.get("RANK", "0")) == 0


def join(device: str = "auto") -> Group:
    """This process's place in the run: one process on ``device`` without torchrun; under torchrun, the process
    group (made at the first call: NCCL for GPUs, gloo for the CPU) and the device of this process."""
    if not launched_by_torchrun():
        return Group(resolve_device(device))
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    where = _process_device(device, local, world)
    backend = "nccl" if where.type == "cuda" else "gloo"
    if not dist.is_initialized():
        if where.type == "cuda":
            torch.cuda.set_device(where)
        dist.init_process_group(backend, device_id=where if where.type == "cuda" else None)
        atexit.register(dist.destroy_process_group)
        if rank:  # rank 0 speaks for the run; the others still report warnings and errors
            log.setLevel(logging.WARNING)
    elif dist.get_backend() != backend:
        raise FacelabError(f"this process already trains with {dist.get_backend()}; one torchrun run uses one kind "
                           "of device (give every command of it the same --device)")
    return Group(where, Shard(rank, world), distributed=True)


def _process_device(device: str, local_rank: int, world: int) -> torch.device:
    """``cuda``/``auto`` -> the GPU of this process (``cuda:LOCAL_RANK``); ``cuda:N`` only for a single process."""
    if device.startswith("cuda:") and world > 1:
        raise FacelabError(f"--device {device} picks one GPU, but torchrun started {world} processes, each on the GPU "
                           "of its LOCAL_RANK; give --device cuda (choose the GPUs with CUDA_VISIBLE_DEVICES)")
    if device.startswith("cuda:") or device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return resolve_device(device)
    resolve_device("cuda")  # one line when there is no GPU
    if local_rank >= torch.cuda.device_count():
        raise FacelabError(f"torchrun started process {local_rank} on this machine, which has {torch.cuda.device_count()} "
                           "GPU(s); lower --nproc_per_node (or --gpus) to the number of GPUs")
    return torch.device("cuda", local_rank)


class CrossProcessBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, for the CPU, where torch's
    SyncBatchNorm refuses to run. The per-channel sums go through torch's differentiable (functional)
    all_reduce, so the gradient flows across processes as it does through one process's batch. Computed in
    fp32 (under bf16 autocast too), in the same order in every process."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        from torch.distributed._functional_collectives import all_reduce  # differentiable: its backward sums too

        x32 = x.float()
        dims = [0, *range(2, x.dim())]
        count = x32.numel() // x32.shape[1] * dist.get_world_size()
        sums = all_reduce(torch.cat([x32.sum(dims), (x32 * x32).sum(dims)]), "sum", dist.group.WORLD)
        mean, square = sums.div(count).chunk(2)
        var = square - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean, momentum)
                self.running_var.lerp_(var * count / max(count - 1, 1), momentum)
        shape = [1, -1] + [1] * (x.dim() - 2)
        y = (x32 - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """``module`` with every BatchNorm layer replaced by one of these, sharing its parameters and buffers
        (so optimisers and state dicts stay valid)."""
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, cls):
            out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
            out.__dict__.update({k: v for k, v in module.__dict__.items() if k in ("_parameters", "_buffers", "training")})
            return out
        for name, child in module.named_children():
            module.add_module(name, cls.convert(child))
        return module


@dataclass
class LaunchConfig(Validated):
    """``--gpus N`` of every training command: run it under torchrun, one process per GPU."""

    gpus: int = option(0, "Train on N GPUs of this machine: starts this command under torchrun with one process "
                          "per GPU (NCCL); --batch-size is per GPU, so N GPUs train on N x batch-size faces per "
                          "iteration (0 = this process alone, on --device).", low=0)


def torchrun_command(cfg: LaunchConfig, argv: list[str]) -> list[str]:
    """The command that runs ``facelab ARGV`` (without ``--gpus``) on ``cfg.gpus`` GPUs under torchrun."""
    if launched_by_torchrun():
        raise FacelabError("--gpus starts torchrun itself; this process already runs under torchrun, so drop --gpus")
    have = torch.cuda.device_count()
    if have < cfg.gpus:
        raise FacelabError(f"--gpus {cfg.gpus}: this machine has {have} GPU(s); on CPUs run "
                           "`torchrun --nproc_per_node N -m facelab ... --device cpu` instead")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.gpus}",
            "-m", "facelab", *argv]


def without_flag(argv: list[str], flag: str) -> list[str]:
    """``argv`` without ``flag VALUE`` / ``flag=VALUE`` (or an abbreviation argparse took for it, ``--gpu 2``)."""
    out, skip = [], False
    for arg in argv:
        name, has_value, _ = arg.partition("=")
        if skip:
            skip = False
        elif len(name) > 2 and name.startswith("--") and flag.startswith(name):
            skip = not has_value
        else:
            out.append(arg)
    return out
