"""Adam and AdaBelief with DeepFaceLab's learning-rate dropout, in one optimiser.

AdaBelief scales steps by the variance of the gradient around its running mean instead of its raw second
moment: large steps where the gradient is predictable, small where it is noisy, which is why SAEHD uses it
by default. Learning-rate dropout applies each parameter's update with probability ``lr_dropout`` only,
which helps the model leave flat regions late in training.
"""

from __future__ import annotations

import math

import torch


class AdaBelief(torch.optim.Optimizer):
    """Each step is six in-place passes over a parameter's tensors and one scratch buffer, reused for
    every parameter: the textbook form (``m_hat``, ``v_hat``, their quotient, the root) makes five new
    tensors per parameter, and on the CPU a tensor of the Original model's 16 M-weight dense layers is
    a fresh memory mapping whose pages fault in on first write; that made the update a quarter of the
    Original's training step (docs/performance.md). Same update, rearranged:
    ``m_hat / (sqrt(v_hat) + eps) = (m / bc1) / (sqrt(v) / sqrt(bc2) + eps)``."""

    def __init__(self, params, lr: float = 5e-5, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-16,
                 belief: bool = True, lr_dropout: float = 1.0, dropout_on_cpu: bool = False):
        defaults = dict(lr=lr, betas=betas, eps=eps, belief=belief, lr_dropout=lr_dropout, dropout_on_cpu=dropout_on_cpu)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        scratch: dict[tuple, torch.Tensor] = {}  # one flat buffer per device and dtype, as large as the largest parameter

        def buffer(p: torch.Tensor) -> torch.Tensor:
            key = (p.device, p.dtype)
            if key not in scratch or scratch[key].numel() < p.numel():
                size = max((q.numel() for g in self.param_groups for q in g["params"]
                            if q.grad is not None and (q.device, q.dtype) == key), default=p.numel())
                scratch[key] = torch.empty(size, device=p.device, dtype=p.dtype)
            return scratch[key][: p.numel()].view_as(p)

        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            eps, lr = group["eps"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["step"] += 1
                g, m, v = p.grad, state["m"], state["v"]
                t = state["step"].item()
                work = buffer(p)
                m.lerp_(g, 1 - beta1)
                deviation = torch.sub(g, m, out=work) if group["belief"] else g
                v.mul_(beta2).addcmul_(deviation, deviation, value=1 - beta2)
                if group["belief"]:
                    v.add_(eps)
                denom = torch.sqrt(v, out=work).div_(math.sqrt(1 - beta2**t)).add_(eps)
                step_size = lr / (1 - beta1**t)
                if group["lr_dropout"] < 1.0:
                    mask_device = "cpu" if group["dropout_on_cpu"] else p.device
                    keep = torch.rand(p.shape, device=mask_device) < group["lr_dropout"]
                    denom = torch.where(keep.to(p.device), denom, torch.inf)  # a dropped update divides to 0
                p.addcdiv_(m, denom, value=-step_size)
        return None
