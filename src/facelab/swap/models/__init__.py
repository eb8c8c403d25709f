"""Swap networks. Every model maps (warped src, warped dst) to reconstructions, masks and the swap.

:func:`build_model` turns a :class:`~facelab.swap.config.SwapConfig` into the right family; Quick96 is the
SAEHD ``df-ud`` preset pinned in :mod:`facelab.swap.config`.
"""

from __future__ import annotations

from typing import Callable

from facelab.swap.config import SwapConfig, parse_archi
from facelab.swap.models.base import SwapModel, SwapOutputs
from facelab.swap.models.original import OriginalModel
from facelab.swap.models.saehd import build_saehd


def _original(cfg: SwapConfig) -> SwapModel:
    return OriginalModel(cfg.resolution, cfg.ae_dims, cfg.e_dims, cfg.d_dims)


def _saehd(cfg: SwapConfig) -> SwapModel:
    kind, opts = parse_archi(cfg.archi)
    return build_saehd(cfg.resolution, kind, opts, cfg.ae_dims, cfg.e_dims, cfg.d_dims, cfg.d_mask_dims)


# Model family -> builder; a new family is one module here and one line (its name also goes in
# facelab.swap.config.MODELS, the option's choices, which a test holds equal to these keys).
BUILDERS: dict[str, Callable[[SwapConfig], SwapModel]] = {"original": _original, "saehd": _saehd, "quick96": _saehd}


def build_model(cfg: SwapConfig) -> SwapModel:
    return BUILDERS[cfg.model](cfg)


__all__ = ["BUILDERS", "SwapModel", "SwapOutputs", "build_model"]
