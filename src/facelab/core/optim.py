"""Adam as the trainers other than the swap one use it (StarGAN, XSeg, the PFE head, the face enhancer).

It is PyTorch's fused Adam: the default one walks every parameter tensor several times per step (the two
moments, the square root, the division, the update, each its own pass), the fused kernel does it in one
vectorised pass. On the 2-core CPU with one thread StarGAN's 45 M-parameter 64 px critic stepped in 26 ms
instead of 236 ms (docs/performance.md). The algorithm is the same: benchmarks/reference_loops.py checks
each trainer's first-step losses against the plain loop's. The swap models have their own optimiser
(``swap/optim.py``: AdaBelief with DeepFaceLab's learning-rate dropout).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

KERNEL_FLAGS = ("fused", "foreach")


def adam(params: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999),
         **options: Any) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr, betas, fused=True, **options)


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict) -> None:
    """``opt.load_state_dict(state)`` keeping this run's kernel: a saved param group carries the ``fused`` /
    ``foreach`` flags of the run that wrote it, so a checkpoint from before the fused Adam would make the
    resumed run the slow one (and would leave its step counters where a fused step cannot use them)."""
    saved = state.get("param_groups", [])
    if len(saved) == len(opt.param_groups):
        saved = [{**old, **{k: now[k] for k in KERNEL_FLAGS if k in now}} for old, now in zip(saved, opt.param_groups)]
        state = {**state, "param_groups": saved}
    opt.load_state_dict(state)
