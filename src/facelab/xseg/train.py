"""XSeg training: the segmenter learns the labelled masks; held-out IoU, previews, saving and resuming.

``segmenter.safetensors`` holds everything a run needs to continue (weights, optimiser state, the
iteration) and batches are a pure function of ``(seed, iteration)``, so a resumed run continues the
counter, the loss curve and the batch sequence where the last save left them. Under torchrun every process
trains on its rows of each batch and rank 0 alone writes (:mod:`facelab.core.distributed`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facelab.core.checkpoint import OneNetworkSaves
from facelab.core.config import save_config
from facelab.core.device import autocast, grad_scaler, memory_format
from facelab.core.logs import MetricsLog
from facelab.core.optim import adam
from facelab.core.training import check_finite_loss, open_run_dir, run_steps, start_run
from facelab.core.training_view import write_preview
from facelab.xseg.network import Segmenter
from facelab.metrics.iou import mask_iou
from facelab.xseg.config import XSegConfig
from facelab.xseg.data import Augment, LabelledFaces, XSegBatches, faces_to_tensor, load_labelled, split_held_out
from facelab.xseg.model_dir import CONFIG_NAME, FORMAT, WEIGHTS_NAME, load_saved_config, read_checkpoint

log = logging.getLogger("facelab")

PREVIEW_FACES = 4


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy per pixel + soft Dice per face: BCE gives every pixel a gradient, Dice keeps
    a small face region (a profile, a half-covered face) from being outvoted by the background."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum((1, 2, 3))
    dice = 1 - (2 * inter + 1) / (prob.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    return bce + dice.mean()


def _grey(mask: np.ndarray) -> np.ndarray:
    """A 0..1 mask as a uint8 BGR image (white = face), for previews."""
    return np.repeat((np.clip(mask, 0, 1) * 255).round().astype(np.uint8)[..., None], 3, -1)


@dataclass
class XSegResult:
    iteration: int
    loss: float
    iou: float  # held-out IoU at the end (nan without held-out faces)
    stopped: str  # "target", "interrupted" or "limit"


class Trainer(OneNetworkSaves):
    FORMAT, WEIGHTS_NAME, CONFIG_NAME, NETWORK = FORMAT, WEIGHTS_NAME, CONFIG_NAME, "segmenter"
    read_checkpoint = staticmethod(read_checkpoint)

    def __init__(self, cfg: XSegConfig, facesets: list[str | Path], model_dir: str | Path):
        cfg.check()
        self.cfg, self.model_dir = cfg, Path(model_dir)
        self.group = start_run(cfg, load_saved_config(self.model_dir), self.model_dir)
        self.device = self.group.device
        data = load_labelled(facesets, cfg.resolution, cfg.face_type)
        self.train_data, self.held_out = split_held_out(data, cfg.eval_faces, cfg.seed)
        if not len(self.held_out):
            log.info(f"{len(data)} labelled faces: too few to hold any out, so no held-out IoU is reported "
                     "(label at least 5)")
        self.batches = XSegBatches(self.train_data, cfg.batch_size,
                                   Augment(cfg.random_warp, cfg.random_flip, cfg.random_hsv_power), cfg.seed,
                                   self.group.shard)
        self.model = Segmenter(cfg.resolution, cfg.base_channels).to(self.device)
        self.model.to(memory_format=memory_format(None, self.device))  # channels_last where it is faster
        self.forward = self.group.wrap(self.model)  # the training step's way in (DistributedDataParallel under torchrun)
        self.opt = adam(self.model.parameters(), cfg.lr)
        self.scaler = grad_scaler(self.device, cfg.precision)
        self.iteration, self.saved_iteration = 0, None
        self._last_eval: tuple[int, float] | None = None
        if open_run_dir(self.group, self.model_dir / WEIGHTS_NAME):
            self._resume()
        main = self.group.is_main
        if main:
            save_config(cfg, self.model_dir / CONFIG_NAME)
        self.metrics = MetricsLog(self.model_dir, "losses", resume_step=self.iteration, enabled=main)
        self.eval_log = MetricsLog(self.model_dir, "eval", resume_step=self.iteration, enabled=main)

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        face, label = batch["face"].to(self.device), batch["label"].to(self.device)
        with autocast(self.device, self.cfg.precision):
            logits = self.forward(face)
        loss = segmentation_loss(logits.float(), label)  # in fp32, outside autocast
        value = self.group.mean({"loss": loss.item()})["loss"]  # the global batch's: every process stops alike
        check_finite_loss(value, self.iteration + 1, self.saved_iteration, self.model_dir)
        self._update(loss)
        return {"loss": value}

    @torch.inference_mode()
    def predict(self, data: LabelledFaces) -> np.ndarray:
        """Face probabilities ``(N,R,R)`` for ``data``'s faces, unaugmented."""
        self.model.eval()
        out = []
        for i in range(0, len(data), self.cfg.batch_size):
            with autocast(self.device, self.cfg.precision):
                logits = self.model(faces_to_tensor(data.images[i : i + self.cfg.batch_size]).to(self.device))
            out.append(torch.sigmoid(logits.float())[:, 0].cpu().numpy())
        self.model.train()
        return np.concatenate(out) if out else np.zeros((0, self.cfg.resolution, self.cfg.resolution), np.float32)

    def evaluate(self) -> float:
        """Mean IoU between the held-out faces' labels and the segmenter's masks (nan without held-out faces)."""
        if not len(self.held_out):
            return math.nan
        return float(mask_iou(self.predict(self.held_out) >= 0.5, self.held_out.labels).mean())

    def report_eval(self) -> float:
        """Evaluate, log and return the held-out IoU (once per iteration)."""
        if self._last_eval is not None and self._last_eval[0] == self.iteration:
            return self._last_eval[1]
        iou = self.evaluate()
        self._last_eval = (self.iteration, iou)
        if math.isfinite(iou):
            self.eval_log.write(self.iteration, {"iou": iou})
            log.info(f"iteration {self.iteration}: held-out IoU {iou:.4f} ({len(self.held_out)} faces)")
        return iou

    def preview(self) -> np.ndarray:
        """One row per face (held-out faces first): face | label | predicted probability, uint8 BGR."""
        shown = self.held_out if len(self.held_out) else self.train_data
        shown = shown.subset(np.arange(min(PREVIEW_FACES, len(shown))))
        rows = [np.concatenate([face, _grey(label), _grey(prob)], 1)
                for face, label, prob in zip(shown.images, shown.labels, self.predict(shown))]
        return np.concatenate(rows, 0)

    def write_preview(self) -> None:
        write_preview(self.model_dir, self.preview(), self.iteration, columns=["face", "label", "prediction"])

    def run(self, max_steps: int | None = None) -> XSegResult:
        """Train until the target iteration, ``max_steps`` more steps, or Ctrl-C; always save at the end."""
        cfg = self.cfg
        if cfg.target_iter and self.iteration >= cfg.target_iter:
            log.info(f"segmenter is already at iteration {self.iteration} >= target {cfg.target_iter}; "
                     "raise --target-iter to go on")
            iou = self.group.on_main(self.report_eval)
            return XSegResult(self.iteration, math.nan, math.nan if iou is None else iou, "target")

        def finish() -> float:
            self.save()
            self.write_preview()
            return self.report_eval()

        self.model.train()
        losses, stopped = run_steps(self, max_steps, "xseg train")
        iou = self.group.on_main(finish)  # the held-out IoU is rank 0's
        return XSegResult(self.iteration, losses.get("loss", math.nan), math.nan if iou is None else iou, stopped)

    def close(self) -> None:
        self.metrics.close()
        self.eval_log.close()


def train(cfg: XSegConfig, facesets: list[str | Path], model_dir: str | Path, max_steps: int | None = None) -> XSegResult:
    """Train (or resume) the segmenter in ``model_dir``: the Python API behind ``facelab xseg train``."""
    trainer = Trainer(cfg, facesets, model_dir)
    try:
        return trainer.run(max_steps)
    finally:
        trainer.close()
