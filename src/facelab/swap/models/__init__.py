"""Swap networks. Every model maps (warped src, warped dst) to reconstructions, masks and the swap.

:func:`build_model` turns a :class:`~facelab.swap.config.SwapConfig` into the right family; Quick96 is the
SAEHD ``df-ud`` preset pinned in :mod:`facelab.swap.config`.
"""

from __future__ import annotations

from facelab.swap.config import SwapConfig, parse_archi
from facelab.swap.models.base import SwapModel, SwapOutputs
from facelab.swap.models.original import OriginalModel
from facelab.swap.models.saehd import build_saehd


def build_model(cfg: SwapConfig) -> SwapModel:
    if cfg.model == "original":
        return OriginalModel(cfg.resolution, cfg.ae_dims, cfg.e_dims, cfg.d_dims)
    kind, opts = parse_archi(cfg.archi)
    return build_saehd(cfg.resolution, kind, opts, cfg.ae_dims, cfg.e_dims, cfg.d_dims, cfg.d_mask_dims)


__all__ = ["SwapModel", "SwapOutputs", "build_model"]
