"""A trained PFE for inference: the frozen backbone plus the uncertainty module, loaded from a model dir."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facelab.core.checkpoint import load_checkpoint
from facelab.core.config import config_from_dict
from facelab.core.device import resolve_device
from facelab.core.errors import FacelabError
from facelab.pfe.backbones import Backbone, load_backbone
from facelab.pfe.config import PFEConfig
from facelab.pfe.rule import RULE_FILE, SameRule, default_rule, load_rule
from facelab.pfe.uncertainty import UncertaintyModule

PFE_FILE = "pfe.safetensors"


def build_module(cfg: PFEConfig, backbone: Backbone) -> UncertaintyModule:
    return UncertaintyModule(backbone.feature_dim, backbone.dim, cfg.hidden)


def load_module_state(module: UncertaintyModule, state: dict, source: Path) -> None:
    """Load saved weights, refusing in one line a module made for a different feature width."""
    saved = state["model"]["fc1.weight"].shape[1]
    if saved != module.fc1.in_features:
        raise FacelabError(f"{source}: this uncertainty module reads {saved} features, the backbone gives "
                           f"{module.fc1.in_features} (made by another facelab version); train it again in a "
                           "new --model-dir")
    module.load_state_dict(state["model"])


def _stored_rule(model_dir: Path | None, backbone: str) -> SameRule | None:
    """The model dir's ``rule.json``; without one dlib's LFW rule for the dlib backbone, else None."""
    path = model_dir / RULE_FILE if model_dir else None
    if path is not None and path.is_file():
        return load_rule(path)
    return default_rule() if backbone == "dlib" else None


def _rule_views(model_dir: Path | None, backbone: str) -> int:
    rule = _stored_rule(model_dir, backbone)
    return rule.views if rule is not None else 1


class PFEModel:
    """``mu`` from the backbone, ``sigma^2`` from the uncertainty module, for crops or features.

    Without a module (:meth:`deterministic`) every face gets unit variance: MLS then ranks pairs exactly
    as the squared distance of their embeddings does, which is what identity scoring can offer before
    any PFE training.
    """

    def __init__(self, cfg: PFEConfig, backbone: Backbone, module: UncertaintyModule | None, device: torch.device,
                 model_dir: Path | None = None):
        self.cfg, self.backbone, self.device, self.model_dir = cfg, backbone, device, model_dir
        self.module = module.to(device).eval().requires_grad_(False) if module is not None else None
        self._rule: SameRule | None = None

    @classmethod
    def deterministic(cls, backbone: str = "dlib", device: str = "auto", views: int | None = None) -> "PFEModel":
        """No uncertainty module; ``views``: see :meth:`load`."""
        cfg = PFEConfig(backbone=backbone)
        views = _rule_views(None, backbone) if views is None else views
        return cls(cfg, load_backbone(backbone, device, views=views), None, resolve_device(device))

    @property
    def has_uncertainty(self) -> bool:
        return self.module is not None

    @property
    def rule(self) -> SameRule:
        """The same-person rule stored with the model (``rule.json``, written by ``pfe eval --save-rule``);
        without one, dlib's L2 rule fitted on LFW, which holds for any model on the dlib backbone (its
        ``mu`` is dlib's embedding)."""
        if self._rule is None:
            self._rule = _stored_rule(self.model_dir, self.cfg.backbone)
            if self._rule is None:
                raise FacelabError(f"{self.model_dir} has no {RULE_FILE}: calibrate it with 'facelab pfe eval --pairs "
                                   f"PAIRS --data DIR --model {self.model_dir} --save-rule'")
        return self._rule

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "auto", views: int | None = None) -> "PFEModel":
        """The model of ``model_dir``. ``views`` (test-time views averaged per face, see
        :class:`~facelab.pfe.backbones.DlibBackbone`) defaults to those its same-person rule was fitted with,
        so its scores meet its threshold; ``pfe eval --views N`` evaluates another count."""
        state = load_checkpoint(Path(model_dir) / PFE_FILE)
        cfg = config_from_dict(PFEConfig, state["config"], source=str(Path(model_dir) / PFE_FILE))
        views = _rule_views(Path(model_dir), cfg.backbone) if views is None else views
        backbone = load_backbone(cfg.backbone, device, views=views)
        module = build_module(cfg, backbone)
        load_module_state(module, state, Path(model_dir) / PFE_FILE)
        return cls(cfg, backbone, module, resolve_device(device), Path(model_dir))

    @torch.no_grad()
    def sigma_sq(self, features: np.ndarray) -> np.ndarray:
        if len(features) == 0 or self.module is None:
            return np.ones((len(features), self.backbone.dim), np.float32)
        x = torch.from_numpy(np.asarray(features, np.float32)).to(self.device)
        return self.module(x).exp().cpu().numpy()

    def embed_crops(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu, feats = self.backbone.encode(crops)
        return mu, self.sigma_sq(feats)
