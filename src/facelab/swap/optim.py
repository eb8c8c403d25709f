"""Adam and AdaBelief with DeepFaceLab's learning-rate dropout, in one optimiser.

AdaBelief scales steps by the variance of the gradient around its running mean instead of its raw second
moment: large steps where the gradient is predictable, small where it is noisy, which is why SAEHD uses it
by default. Learning-rate dropout applies each parameter's update with probability ``lr_dropout`` only,
which helps the model leave flat regions late in training.
"""

from __future__ import annotations

import logging
import math

import torch

log = logging.getLogger("facelab")


# Parameters at least this large (the dense layers, the wide convolutions) get the compiled update on the
# CPU; below it the eager passes cost little and a tiny model (the tests') never waits for a compile.
FUSE_MIN_NUMEL = 1 << 20
_compiled: dict[str, object] = {}  # "update": the compiled function, or None once compiling failed here


def _fused_math(p, g, m, v, beta1, beta2, eps, step_size, eps_scaled, belief: bool):
    """One AdaBelief step of flat tensors, in place; the scalars are 0-d tensors so each step's bias
    corrections reuse the one compiled kernel."""
    m_new = m + (g - m) * (1 - beta1)
    d = g - m_new if belief else g
    v_new = v * beta2 + d * d * (1 - beta2)
    if belief:
        v_new = v_new + eps
    p.copy_(p - step_size * m_new / (torch.sqrt(v_new) + eps_scaled))
    m.copy_(m_new)
    v.copy_(v_new)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.as_strided((t.numel(),), (1,), t.storage_offset())


def _fusable(p: torch.Tensor, *others: torch.Tensor) -> bool:
    """A large CPU parameter whose gradient and moments lie in the same dense memory order as it."""
    dense = p.is_contiguous() or (p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last))
    return (p.device.type == "cpu" and p.numel() >= FUSE_MIN_NUMEL and dense and p.dtype == torch.float32
            and all(o.stride() == p.stride() and o.dtype == p.dtype for o in others))


def _compiled_update():
    if "update" not in _compiled:
        try:
            _compiled["update"] = torch.compile(_fused_math, dynamic=True)
        except Exception as exc:  # noqa: BLE001 - no compiler backend here: the eager passes do the same
            log.warning(f"AdaBelief runs uncompiled ({type(exc).__name__}: {exc})")
            _compiled["update"] = None
    return _compiled["update"]


class AdaBelief(torch.optim.Optimizer):
    """The update of a large CPU parameter is one compiled loop (torch.compile, made once per process: about
    30 s the first time on the 2-core machine, 5 s once inductor's cache holds it) that reads each tensor
    once; the others take six in-place passes and one scratch buffer reused for every parameter. The
    textbook form (``m_hat``, ``v_hat``, their quotient, the root) makes five new tensors per parameter;
    on the CPU a tensor of the Original model's 16 M-weight dense layers is a fresh memory mapping whose
    pages fault in on first write, and the passes each read and write hundreds of megabytes: that made the
    update a quarter to a third of a swap training step (docs/performance.md). Same update, rearranged:
    ``m_hat / (sqrt(v_hat) + eps) = (m * sqrt(bc2) / bc1) / (sqrt(v) + eps * sqrt(bc2))``."""

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
                root_bc2 = math.sqrt(1 - beta2**t)
                step_size = lr / (1 - beta1**t) * root_bc2
                if group["lr_dropout"] >= 1.0 and _fusable(p, g, m, v) and (update := _compiled_update()) is not None:
                    scalars = (torch.tensor(x) for x in (beta1, beta2, eps, step_size, eps * root_bc2))
                    try:
                        update(_flat(p), _flat(g), _flat(m), _flat(v), *scalars, group["belief"])
                        continue
                    except Exception as exc:  # noqa: BLE001 - the compiler failed at its first use
                        log.warning(f"AdaBelief runs uncompiled ({type(exc).__name__}: {str(exc)[:200]})")
                        _compiled["update"] = None
                work = buffer(p)
                m.lerp_(g, 1 - beta1)
                deviation = torch.sub(g, m, out=work) if group["belief"] else g
                v.mul_(beta2).addcmul_(deviation, deviation, value=1 - beta2)
                if group["belief"]:
                    v.add_(eps)
                denom = torch.sqrt(v, out=work).add_(eps * root_bc2)
                if group["lr_dropout"] < 1.0:
                    mask_device = "cpu" if group["dropout_on_cpu"] else p.device
                    keep = torch.rand(p.shape, device=mask_device) < group["lr_dropout"]
                    denom = torch.where(keep.to(p.device), denom, torch.inf)  # a dropped update divides to 0
                p.addcdiv_(m, denom, value=-step_size)
        return None
