"""PFE's uncertainty module: backbone features -> log sigma^2, one variance per embedding dimension."""

from __future__ import annotations

import torch
from torch import nn


class UncertaintyModule(nn.Module):
    """FC-BN-ReLU-FC-BN, then a learned scalar scale and shift (Shi & Jain 2019, Sec. 3.3).

    The last BN has no affine part, so every dimension is standardised and one learned ``scale`` and
    ``shift`` set the overall level of log sigma^2. Starting from a tiny scale and a shift of -7 puts
    every face at the same small variance, from which training moves only what the MLS loss asks for.
    """

    def __init__(self, in_dim: int, embed_dim: int, hidden: int = 256):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, embed_dim)
        self.bn2 = nn.BatchNorm1d(embed_dim, affine=False)
        self.scale = nn.Parameter(torch.tensor(1e-4))
        self.shift = nn.Parameter(torch.tensor(-7.0))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.fc1(features)))
        return self.scale * self.bn2(self.fc2(x)) + self.shift
