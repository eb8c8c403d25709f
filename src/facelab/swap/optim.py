"""Adam and AdaBelief with DeepFaceLab's learning-rate dropout, in one optimiser.

AdaBelief scales steps by the variance of the gradient around its running mean instead of its raw second
moment: large steps where the gradient is predictable, small where it is noisy, which is why SAEHD uses it
by default. Learning-rate dropout applies each parameter's update with probability ``lr_dropout`` only,
which helps the model leave flat regions late in training.
"""

from __future__ import annotations

import torch


class AdaBelief(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 5e-5, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-16,
                 belief: bool = True, lr_dropout: float = 1.0, dropout_on_cpu: bool = False):
        defaults = dict(lr=lr, betas=betas, eps=eps, belief=belief, lr_dropout=lr_dropout, dropout_on_cpu=dropout_on_cpu)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
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
                m.lerp_(g, 1 - beta1)
                deviation = g - m if group["belief"] else g
                v.mul_(beta2).addcmul_(deviation, deviation, value=1 - beta2)
                if group["belief"]:
                    v.add_(group["eps"])
                t = state["step"].item()
                m_hat = m / (1 - beta1**t)
                v_hat = v / (1 - beta2**t)
                update = m_hat / (v_hat.sqrt() + group["eps"])
                if group["lr_dropout"] < 1.0:
                    mask_device = "cpu" if group["dropout_on_cpu"] else p.device
                    keep = torch.rand(p.shape, device=mask_device) < group["lr_dropout"]
                    update = update * keep.to(device=p.device, dtype=update.dtype)
                p.add_(update, alpha=-group["lr"])
        return None
