"""The mutual likelihood score (PFE's pair score and training loss) and the AM-softmax of the backbone."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def mutual_likelihood_score(mu1: torch.Tensor, log_sigma_sq1: torch.Tensor, mu2: torch.Tensor,
                            log_sigma_sq2: torch.Tensor) -> torch.Tensor:
    """log p(x1 = x2) for rows of two Gaussian embeddings (Shi & Jain 2019, Eq. 3), constant included.

    ``s(xi, xj) = -1/2 sum_l [(mu_i - mu_j)^2 / (s_i + s_j) + log(s_i + s_j)] - D/2 log 2 pi``.
    Means are used as given; callers L2-normalise them (PFE's embeddings live on the unit sphere).
    """
    var = log_sigma_sq1.exp() + log_sigma_sq2.exp()
    d = mu1.shape[-1]
    return -0.5 * (((mu1 - mu2) ** 2) / var + var.log()).sum(-1) - 0.5 * d * math.log(2 * math.pi)


def genuine_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (i, j), i < j, of every same-identity pair in a batch."""
    same = labels[:, None] == labels[None, :]
    i, j = torch.triu(same, diagonal=1).nonzero(as_tuple=True)
    return i, j


def mls_loss(mu: torch.Tensor, log_sigma_sq: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative MLS over all genuine pairs in the batch (PFE's loss; impostor pairs are not used)."""
    i, j = genuine_pairs(labels)
    if i.numel() == 0:
        raise ValueError("the batch holds no genuine pair; use samples_per_class >= 2")
    mu = F.normalize(mu, dim=-1)
    return -mutual_likelihood_score(mu[i], log_sigma_sq[i], mu[j], log_sigma_sq[j]).mean()


class AMSoftmax(nn.Module):
    """Additive-margin softmax (Wang et al. 2018): cross-entropy on ``s * (cos(theta) - m * onehot)``."""

    def __init__(self, embed_dim: int, n_classes: int, scale: float = 30.0, margin: float = 0.35):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, embed_dim))
        nn.init.xavier_uniform_(self.weight)
        self.scale, self.margin = scale, margin

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the loss and the batch accuracy (argmax of the cosines, no margin)."""
        cos = F.normalize(embeddings.float(), dim=-1) @ F.normalize(self.weight, dim=-1).t()
        logits = self.scale * (cos - self.margin * F.one_hot(labels, cos.shape[1]))
        return F.cross_entropy(logits, labels), (cos.argmax(1) == labels).float().mean()
