"""Enhancer training: the network learns to undo simulated degradations of sharp faces, scored against
bicubic enlargement on held-out people; previews, saving and resuming.

``enhancer.safetensors`` holds everything a run needs to continue (weights, optimiser state, the
iteration) and batches are a pure function of ``(seed, iteration)``, so a resumed run continues the
counter, the loss curve and the batch sequence where the last save left them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from facelab.core.checkpoint import OneNetworkSaves, resume_checkpoint
from facelab.core.config import save_config
from facelab.core.device import autocast, grad_scaler
from facelab.core.errors import FacelabError
from facelab.core.files import atomic_write_bytes, ensure_folder
from facelab.core.logs import MetricsLog
from facelab.core.optim import adam
from facelab.core.training import check_finite_loss, run_steps, start_run
from facelab.enhance.config import EnhancerConfig
from facelab.enhance.data import EnhanceBatches, load_faces, split_people, spread
from facelab.enhance.evaluate import comparison_grid, score, summary
from facelab.enhance.model_dir import CONFIG_NAME, FORMAT, WEIGHTS_NAME, load_saved_config, read_checkpoint
from facelab.enhance.network import FaceEnhancer, restore
from facelab.metrics.ssim import dssim

log = logging.getLogger("facelab")

PREVIEW_FACES = 2
SSIM_WINDOW = 11


def enhancer_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 + DSSIM: L1 pulls every pixel to the truth (what PSNR counts), DSSIM weighs local contrast and
    structure (edges, skin texture) that an average of plausible faces would blur away."""
    return F.l1_loss(out, target) + dssim(out, target, SSIM_WINDOW)


@dataclass
class EnhanceResult:
    iteration: int
    loss: float
    held_out: dict = field(default_factory=dict)  # level -> mean/std figures (empty without held-out faces)
    stopped: str = "target"  # "target", "interrupted" or "limit"


class Trainer(OneNetworkSaves):
    FORMAT, WEIGHTS_NAME, CONFIG_NAME, NETWORK = FORMAT, WEIGHTS_NAME, CONFIG_NAME, "enhancer"
    read_checkpoint = staticmethod(read_checkpoint)

    def __init__(self, cfg: EnhancerConfig, data: list[str | Path], model_dir: str | Path):
        cfg.check()
        self.cfg, self.model_dir = cfg, Path(model_dir)
        self.group = start_run(cfg, load_saved_config(self.model_dir), self.model_dir)
        if self.group.distributed:  # run_steps would keep the processes in step, but each would train alone
            raise FacelabError("facelab enhancer train runs in one process: its batches are not split between "
                               "torchrun's processes (docs/distributed.md); start it without torchrun")
        self.device = self.group.device
        train_paths, held_paths = split_people(data, cfg.eval_people, cfg.seed)
        if not train_paths:
            raise FacelabError("no training faces: every --data folder is empty or held out; add --data folders")
        held_paths = [held_paths[i] for i in spread(cfg.eval_faces, len(held_paths))]
        self.faces = load_faces(train_paths, cfg.size, "load training faces")
        self.held_out = load_faces(held_paths, cfg.size, "load held-out faces")
        if not len(self.held_out):
            log.info("no held-out faces (every --data folder holds one person): no held-out PSNR/SSIM is reported")
        self.batches = EnhanceBatches(self.faces, cfg.batch_size, cfg.patch_size, cfg.seed)
        self.model = FaceEnhancer(cfg.channels, cfg.blocks).to(self.device)
        self.opt = adam(self.model.parameters(), cfg.lr)
        self.scaler = grad_scaler(self.device, cfg.precision)
        self.iteration, self.saved_iteration = 0, None
        self._last_eval: tuple[int, dict] | None = None
        ensure_folder(self.model_dir, "model dir")
        if resume_checkpoint(self.model_dir / WEIGHTS_NAME):
            self._resume()
        save_config(cfg, self.model_dir / CONFIG_NAME)
        self.metrics = MetricsLog(self.model_dir, "losses", resume_step=self.iteration)
        self.eval_log = MetricsLog(self.model_dir, "eval", resume_step=self.iteration)

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        x, target = batch["input"].to(self.device), batch["target"].to(self.device)
        with autocast(self.device, self.cfg.precision):
            out = self.model(x)
        loss = enhancer_loss(out.float(), target)
        value = loss.item()
        check_finite_loss(value, self.iteration + 1, self.saved_iteration, self.model_dir)
        self._update(loss)
        return {"loss": value}

    def enhance(self, faces: np.ndarray) -> np.ndarray:
        """The network's restoration of faces at its size (the trainer's held-out figures and previews)."""
        return restore(self.model, faces, self.device, self.cfg.precision, self.cfg.batch_size)

    def report_eval(self) -> dict:
        """Score the held-out faces against bicubic (once per iteration), log and return the summary."""
        if self._last_eval is not None and self._last_eval[0] == self.iteration:
            return self._last_eval[1]
        figures = summary(score(self.enhance, self.held_out, self.cfg.seed)) if len(self.held_out) else {}
        self._last_eval = (self.iteration, figures)
        if figures:
            self.eval_log.write(self.iteration, {f"{name}_{level}": row[name] for level, row in figures.items()
                                                 for name in ("psnr", "psnr_bicubic", "ssim", "ssim_bicubic")})
            levels = ", ".join(f"{level} {row['psnr']:.2f} dB / {row['ssim']:.4f} (bicubic {row['psnr_bicubic']:.2f} / "
                               f"{row['ssim_bicubic']:.4f})" for level, row in figures.items())
            log.info(f"iteration {self.iteration}: held-out PSNR / SSIM, {len(self.held_out)} faces: {levels}")
        return figures

    def write_preview(self) -> None:
        shown = self.held_out if len(self.held_out) else self.faces
        grid = comparison_grid(self.enhance, shown[spread(PREVIEW_FACES, len(shown))], self.cfg.seed)
        ok, png = cv2.imencode(".png", grid)
        atomic_write_bytes(self.model_dir / "preview.png", png.tobytes())

    def run(self, max_steps: int | None = None) -> EnhanceResult:
        """Train until the target iteration, ``max_steps`` more steps, or Ctrl-C; always save at the end."""
        cfg = self.cfg
        if cfg.target_iter and self.iteration >= cfg.target_iter:
            log.info(f"enhancer is already at iteration {self.iteration} >= target {cfg.target_iter}; "
                     "raise --target-iter to go on")
            return EnhanceResult(self.iteration, math.nan, self.report_eval(), "target")
        self.model.train()
        losses, stopped = run_steps(self, max_steps, "enhancer train")
        self.save()
        self.write_preview()
        return EnhanceResult(self.iteration, losses.get("loss", math.nan), self.report_eval(), stopped)

    def close(self) -> None:
        self.metrics.close()
        self.eval_log.close()


def train(cfg: EnhancerConfig, data: list[str | Path], model_dir: str | Path, max_steps: int | None = None) -> EnhanceResult:
    """Train (or resume) the enhancer in ``model_dir``: the Python API behind ``facelab enhancer train``."""
    trainer = Trainer(cfg, data, model_dir)
    try:
        return trainer.run(max_steps)
    finally:
        trainer.close()
