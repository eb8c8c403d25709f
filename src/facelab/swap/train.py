"""The face-swap training loop: one explicit step, saving, resuming, evaluation and previews.

Everything a run needs to continue exactly lives in ``model.safetensors`` (weights, optimiser state, the
iteration, torch's RNG state); batches are a pure function of ``(seed, iteration)``. So a run stopped at
any save and resumed gives, on the CPU, the same next loss as one that never stopped. Under torchrun every
process trains on its rows of each batch and rank 0 alone writes (:mod:`facelab.core.distributed`).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from facelab.core.checkpoint import load_checkpoint, save_checkpoint
from facelab.core.config import check_fixed_unchanged, save_config
from facelab.core.device import autocast, grad_scaler, memory_format
from facelab.core.errors import FacelabError
from facelab.core.files import atomic_write_bytes, atomic_write_text
from facelab.core.logs import MetricsLog
from facelab.core.training import check_finite_loss, open_run_dir, run_steps, start_run
from facelab.core.training_view import write_preview
from facelab.metrics.identity import IdentityProbe
from facelab.metrics.sharpness import sharpness_ratio
from facelab.metrics.ssim import ssim
from facelab.swap.config import SwapConfig, apply_preset
from facelab.swap.data import Augment, FaceData, SwapBatches, load_faces
from facelab.swap.discriminators import CodeDiscriminator, UNetPatchDiscriminator, d_loss, g_loss
from facelab.swap.losses import LossOptions, side_loss, soft_mask, style_losses
from facelab.swap.model_dir import CONFIG_NAME, STATE_NAME, WEIGHTS_NAME, load_saved_config
from facelab.swap.models import SwapModel, build_model
from facelab.swap.optim import AdaBelief

log = logging.getLogger("facelab")

KEEP_BACKUPS = 15
PREVIEW_FACES = 4


@dataclass
class TrainResult:
    iteration: int
    losses: dict[str, float]
    ssim_mean: float
    ssim_std: float
    stopped: str  # "target", "interrupted" or "limit"


def _optimizer_options(cfg: SwapConfig, lr_factor: float = 1.0) -> dict:
    """The optimiser settings a user may change between runs (a resumed optimiser keeps only its moments)."""
    belief = cfg.optimizer == "adabelief"
    return dict(lr=cfg.lr * lr_factor, eps=1e-16 if belief else 1e-7, belief=belief,
                lr_dropout=0.3 if cfg.lr_dropout != "off" else 1.0, dropout_on_cpu=cfg.lr_dropout == "cpu")


def _make_optimizer(params, cfg: SwapConfig) -> AdaBelief:
    return AdaBelief(params, **_optimizer_options(cfg))


def _lr_factors(cfg: SwapConfig) -> tuple[float, float]:
    """The learning-rate factors of the generator's two parameter groups (SwapModel.parameter_groups)."""
    return cfg.encoder_lr_factor, 1.0


def _generator_optimizer(model: SwapModel, cfg: SwapConfig) -> AdaBelief:
    groups = [{"params": params, **_optimizer_options(cfg, factor)}
              for params, factor in zip(model.parameter_groups(), _lr_factors(cfg))]
    return AdaBelief(groups)


def _as_groups(saved: dict, model: SwapModel) -> dict:
    """A generator optimiser state saved as one group (before encoder_lr_factor existed) as today's two, so
    those model folders resume with their moments; the split is exact because the encoder side comes first."""
    if len(saved["param_groups"]) != 1:
        return saved
    (group,) = saved["param_groups"]
    n = len(model.parameter_groups()[0])
    return {**saved, "param_groups": [{**group, "params": group["params"][:n]}, {**group, "params": group["params"][n:]}]}


class Trainer:
    def __init__(self, cfg: SwapConfig, src_dir: str | Path | FaceData, dst_dir: str | Path | FaceData,
                 model_dir: str | Path):
        cfg = apply_preset(cfg, {"batch_size"})  # quick96/original pin their network even from the Python API
        cfg.check()
        self.cfg, self.model_dir = cfg, Path(model_dir)
        self.group = start_run(cfg, load_saved_config(self.model_dir), self.model_dir)
        self.device = self.group.device
        resumable = open_run_dir(self.group, self.model_dir / WEIGHTS_NAME)
        self._load_data(src_dir, dst_dir)
        self.model: SwapModel = build_model(cfg).to(self.device)
        self.gan = UNetPatchDiscriminator(cfg.resolution, cfg.gan_patch_size, cfg.gan_dims).to(self.device) if cfg.gan_power > 0 else None
        code_ch = self._code_channels()
        self.code_d = CodeDiscriminator(code_ch).to(self.device) if cfg.true_face_power > 0 else None
        self.memory_format = memory_format(cfg.channels_last, self.device)
        self.model.to(memory_format=self.memory_format)
        self.opt = _generator_optimizer(self.model, cfg)
        self.gan_opt = _make_optimizer(self.gan.parameters(), cfg) if self.gan else None
        self.code_opt = _make_optimizer(self.code_d.parameters(), cfg) if self.code_d else None
        self.scaler = grad_scaler(self.device, cfg.precision)
        # the training step calls the networks through DistributedDataParallel when it updates them (the
        # generator pass through a discriminator uses the plain one: its gradients are dropped)
        wrapped = self.group.wrap(self.model)
        self.forward = torch.compile(wrapped) if cfg.compile else wrapped
        self.gan_train = self.group.wrap(self.gan) if self.gan else None
        self.code_train = self.group.wrap(self.code_d) if self.code_d else None
        self.loss_opts = LossOptions(cfg.resolution, cfg.masked_training, cfg.eyes_mouth_prio, cfg.face_style_power,
                                     cfg.bg_style_power, cfg.loss)
        self.iteration, self.saved_iteration, self._unused_state = 0, None, {}
        # wall-clock seconds this model has trained in earlier runs; eval.csv's ``minutes`` adds this run's
        self._seconds_before, self._started = 0.0, time.monotonic()
        self._last_eval: tuple[int, tuple[float, float]] | None = None
        self._id_probe: IdentityProbe | None = None
        self._id_people: dict[str, np.ndarray] | None = None  # src and dst embeddings, made at the first report
        if resumable:
            self._resume()
        else:
            self._refuse_lost_checkpoint()
            if cfg.start_from:
                self._start_from(Path(cfg.start_from))
        main = self.group.is_main
        if main:
            save_config(cfg, self.model_dir / CONFIG_NAME)
        self.metrics = MetricsLog(self.model_dir, "losses", resume_step=self.iteration, enabled=main)
        self.eval_log = MetricsLog(self.model_dir, "eval", resume_step=self.iteration, enabled=main)

    # ----------------------------------------------------------------------------------------- set-up
    def _load_data(self, src_dir, dst_dir) -> None:
        cfg = self.cfg
        if cfg.pretrain:
            src_dir = dst_dir = cfg.pretrain_faceset
        def load(source) -> FaceData:  # a folder, or faces already in memory (benchmarks, notebooks)
            return source if isinstance(source, FaceData) else load_faces(str(source), cfg.resolution, cfg.face_type)

        src = load(src_dir)
        dst = src if cfg.pretrain else load(dst_dir)
        rng = np.random.default_rng(cfg.seed)
        self.src_train, self.src_hold = self._split(src, rng, src_dir)
        self.dst_train, self.dst_hold = self._split(dst, rng, dst_dir)
        self.batches = SwapBatches(
            self.src_train, self.dst_train, cfg.batch_size,
            Augment(cfg.random_warp, cfg.random_src_flip, cfg.random_hsv_power, cfg.uniform_yaw, cfg.blur_out_mask, cfg.ct_mode),
            Augment(cfg.random_warp, cfg.random_dst_flip, cfg.random_hsv_power, cfg.uniform_yaw, cfg.blur_out_mask),
            cfg.seed, self.group.shard)

    def _split(self, data: FaceData, rng: np.random.Generator, folder) -> tuple[FaceData, FaceData]:
        """Hold out up to ``eval_faces`` faces (a fifth at most) that training never sees, for SSIM."""
        if len(data) < 2:
            raise FacelabError(f"faceset {folder} has {len(data)} face; training needs at least 2 (ideally thousands)")
        order = rng.permutation(len(data))
        k = min(self.cfg.eval_faces, len(data) // 5)
        return data.subset(np.sort(order[k:])), data.subset(np.sort(order[:k]))

    def _code_channels(self) -> int:
        with torch.no_grad():
            x = torch.zeros(1, 3, self.cfg.resolution, self.cfg.resolution, device=self.device)
            return self.model(x, x).dst_code.shape[1] if self.cfg.true_face_power > 0 else 0

    def _resume(self) -> None:
        path = self.model_dir / WEIGHTS_NAME
        state = load_checkpoint(path)
        try:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(_as_groups(state["optimizer"], self.model))
        except (KeyError, RuntimeError, ValueError) as exc:
            raise FacelabError(f"{path} does not match this model's config ({type(exc).__name__}); "
                               "restore its config.yaml or use a new model dir") from None
        for name, module, opt in (("gan", self.gan, self.gan_opt), ("code", self.code_d, self.code_opt)):
            if name in state and module is not None:
                module.load_state_dict(state[name])
                opt.load_state_dict(state[f"{name}_optimizer"])
            elif name in state:  # switched off this run: keep it for a later run that switches it back on
                self._unused_state[name] = state[name]
                self._unused_state[f"{name}_optimizer"] = state[f"{name}_optimizer"]
        for opt, factors in ((self.opt, _lr_factors(self.cfg)), (self.gan_opt, (1.0,)), (self.code_opt, (1.0,))):
            for group, factor in zip(opt.param_groups if opt is not None else (), factors):
                group.update(_optimizer_options(self.cfg, factor))
        self.scaler.load_state_dict(state.get("scaler", {}) or self.scaler.state_dict())
        torch.set_rng_state(state["torch_rng"])
        self.iteration = self.saved_iteration = int(state["iteration"])
        self._seconds_before = float(state.get("train_seconds", 0.0))
        if state.get("pretrain") and not self.cfg.pretrain:
            log.info("pretraining finished: the iteration counter starts again at 0")
            self.iteration, self._seconds_before = 0, 0.0
        log.info(f"resumed {self.model_dir} at iteration {self.iteration}")

    def _start_from(self, folder: Path) -> None:
        """A new model begins with another model's weights (its discriminators too, where both have them):
        a model pretrained once on a generic faceset learns a new pair far sooner than random weights.
        The optimiser starts afresh and the counter at 0, as when DeepFaceLab's pretraining is switched off."""
        other = load_saved_config(folder)
        if other is None or not (folder / WEIGHTS_NAME).is_file():  # read only: the other folder is not ours
            raise FacelabError(f"--start-from {folder} is not a facelab swap model dir (needs {CONFIG_NAME} and "
                               f"{WEIGHTS_NAME}); point it at a folder made by `facelab train`")
        check_fixed_unchanged(other, self.cfg, str(folder))
        state = load_checkpoint(folder / WEIGHTS_NAME)
        self.model.load_state_dict(state["model"])
        for name, module in (("gan", self.gan), ("code", self.code_d)):
            if name in state and module is not None:
                module.load_state_dict(state[name])
        log.info(f"started from the weights of {folder} (its iteration {int(state['iteration'])}); counting from 0")

    def _refuse_lost_checkpoint(self) -> None:
        """A dir whose state.yaml records a save but that holds no checkpoint lost it: starting over at
        iteration 0 would also cut its losses.csv and, two saves later, overwrite the user's backups."""
        path = self.model_dir / STATE_NAME
        try:
            iteration = int((yaml.safe_load(path.read_text()) or {}).get("iteration") or 0) if path.is_file() else 0
        except (yaml.YAMLError, AttributeError, TypeError, ValueError):
            iteration = 0  # a damaged state.yaml records nothing
        if iteration > 0:
            raise FacelabError(f"{self.model_dir} was saved at iteration {iteration} but holds no {WEIGHTS_NAME} "
                               "(nor a previous or temporary save); restore it (e.g. from autobackups/) or use a new model dir")

    # ----------------------------------------------------------------------------------------- saving
    def train_seconds(self) -> float:
        """Wall-clock seconds of training so far, every run of this model dir together (set-up, previews and
        evaluations included: what a user waits), so a curve against minutes survives resumes."""
        return self._seconds_before + time.monotonic() - self._started

    def save(self) -> None:
        state = {"format": "facelab-swap-1", "iteration": self.iteration, "pretrain": self.cfg.pretrain,
                 "train_seconds": self.train_seconds(),
                 "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                 "scaler": self.scaler.state_dict(), "torch_rng": torch.get_rng_state(), **self._unused_state}
        if self.gan is not None:
            state.update(gan=self.gan.state_dict(), gan_optimizer=self.gan_opt.state_dict())
        if self.code_d is not None:
            state.update(code=self.code_d.state_dict(), code_optimizer=self.code_opt.state_dict())
        save_checkpoint(self.model_dir / WEIGHTS_NAME, state)
        save_config(self.cfg, self.model_dir / CONFIG_NAME)
        atomic_write_text(self.model_dir / STATE_NAME, yaml.safe_dump(
            {"iteration": self.iteration, "pretrain": self.cfg.pretrain, "saved_at": time.strftime("%Y-%m-%d %H:%M:%S"),
             "train_minutes": round(self.train_seconds() / 60, 2)}))
        self.saved_iteration = self.iteration
        log.info(f"saved {self.model_dir / WEIGHTS_NAME} at iteration {self.iteration}")

    def autobackup(self) -> None:
        """Copy the current save to ``autobackups/<iteration>``, keeping the newest 15."""
        root = self.model_dir / "autobackups"
        target = root / f"{self.iteration:09d}"
        target.mkdir(parents=True, exist_ok=True)
        for name in (WEIGHTS_NAME, CONFIG_NAME, STATE_NAME):
            shutil.copy2(self.model_dir / name, target / name)
        for old in sorted(p for p in root.iterdir() if p.is_dir())[:-KEEP_BACKUPS]:
            shutil.rmtree(old)

    # ----------------------------------------------------------------------------------------- one step
    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg = self.cfg
        b = {k: v.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format) for k, v in batch.items()}
        # the networks run under autocast; every loss (SSIM's Gaussian convolutions above all) is computed
        # in fp32 outside it: in bf16 the DSSIM of two near-flat faces came out 0.344 instead of 0.0072
        with autocast(self.device, cfg.precision):  # the swapped face only where a style loss reads it
            out = self.forward(b["src_input"], b["dst_input"], swap=self.loss_opts.uses_swap)
        src_loss, src_t, src_p = side_loss(b["src_target"], b["src_mask"], b["src_em_mask"], out.pred_src.float(),
                                           out.pred_src_mask.float(), self.loss_opts)
        dst_loss, _, _ = side_loss(b["dst_target"], b["dst_mask"], b["dst_em_mask"], out.pred_dst.float(),
                                   out.pred_dst_mask.float(), self.loss_opts)
        total = src_loss + dst_loss
        if self.loss_opts.uses_swap:
            total = total + style_losses(b["dst_target"], b["dst_mask"], out.pred_swap.float(), self.loss_opts)
        if self.gan is not None:
            with autocast(self.device, cfg.precision):
                center, pixel = self.gan(src_p)
            total = total + cfg.gan_power * (g_loss(center.float()) + g_loss(pixel.float()))
        if self.code_d is not None:
            with autocast(self.device, cfg.precision):
                code_score = self.code_d(out.dst_code)
            total = total + cfg.true_face_power * g_loss(code_score.float())
        # the global batch's losses, so that every process stops together on a non-finite one
        losses = self.group.mean({"src_loss": src_loss.item(), "dst_loss": dst_loss.item(), "total": total.item()})
        check_finite_loss(losses["total"], self.iteration + 1, self.saved_iteration, self.model_dir,
                          "lower --lr or use --clipgrad")
        self._update(total, self.opt, self.model.parameters())
        critics = {}
        if self.gan is not None:
            with autocast(self.device, cfg.precision):
                (real_c, real_p), (fake_c, fake_p) = self.gan_train(src_t), self.gan_train(src_p.detach())
            loss_d = d_loss(real_c.float(), fake_c.float()) + d_loss(real_p.float(), fake_p.float())
            self._update(loss_d, self.gan_opt, self.gan.parameters())
            critics["gan_d"] = loss_d.item()
        if self.code_d is not None:
            with autocast(self.device, cfg.precision):
                src_score, dst_score = self.code_train(out.src_code.detach()), self.code_train(out.dst_code.detach())
            loss_c = d_loss(src_score.float(), dst_score.float())
            self._update(loss_c, self.code_opt, self.code_d.parameters())
            critics["true_face_d"] = loss_c.item()
        self.scaler.update()
        return {**losses, **self.group.mean(critics)}

    def _update(self, loss: torch.Tensor, opt: AdaBelief, params) -> None:
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.clipgrad:
            self.scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(list(params), 1.0)
        self.scaler.step(opt)

    # ----------------------------------------------------------------------------------------- eval / preview
    @torch.inference_mode()
    def evaluate(self) -> tuple[float, float, dict[str, float]]:
        """Held-out faces against their reconstructions and the dst faces swapped to src.

        ``ssim_mean``/``ssim_std``: SSIM (11 px Gaussian window) of the whole crop, the reference port's
        figure; ``ssim_face_*``: the same SSIM map averaged over the face mask only, where a blob that
        keeps the background and the skin tone is not rewarded for them; ``sharp_*``: the Laplacian
        variance over the face against the real face's (metrics.sharpness; real detail scores 1, a blob
        near 0); and who the swapped faces are (:meth:`_identity`).
        """
        if not len(self.src_hold) or not len(self.dst_hold):
            return math.nan, math.nan, {}
        out, crop, face, swapped = {}, [], [], []
        for side, data in (("src", self.src_hold), ("dst", self.dst_hold)):
            faces, masks = self._tensors(data)
            preds = []
            for i in range(0, len(faces), self.cfg.batch_size):
                chunk = faces[i : i + self.cfg.batch_size]
                pred = self.model(chunk, chunk)
                preds.append((pred.pred_src if side == "src" else pred.pred_dst).float())
                if side == "dst":
                    swapped.append(pred.pred_swap.float())
            pred = torch.cat(preds)
            crop.append(ssim(pred, faces, reduce=False).cpu())
            face.append(ssim(pred, faces, reduce=False, mask=masks).cpu())
            out[f"ssim_{side}"] = crop[-1].mean().item()
            out[f"ssim_face_{side}"] = face[-1].mean().item()
            out[f"sharp_{side}"] = sharpness_ratio(pred, faces, masks).mean().item()
        swapped = torch.cat(swapped)
        dst, dst_masks = self._tensors(self.dst_hold)
        detail = sharpness_ratio(swapped, dst, dst_masks)  # against the real dst face: its pose, its light
        out["sharp_swap"] = detail.mean().item()
        face = torch.cat(face)
        out["ssim_face_mean"], out["ssim_face_std"] = face.mean().item(), face.std().item()
        crop = torch.cat(crop)
        return crop.mean().item(), crop.std().item(), {**out, **self._identity(swapped, detail)}

    def _identity(self, swapped: torch.Tensor, detail: torch.Tensor) -> dict[str, float]:
        """Who the held-out dst faces swapped to src are (:meth:`IdentityProbe.judge`, the calibrated rule):
        against the src and the dst person's held-out faces. A swap that carries the src identity moves
        from dst to src; a blob is nobody."""
        if self._id_people is None:
            self._id_probe = IdentityProbe()
            self._id_people = {side: self._id_probe.embed(data.images, data.landmarks)
                               for side, data in (("src", self.src_hold), ("dst", self.dst_hold))}
        faces = swapped.permute(0, 2, 3, 1).clamp(0, 1).cpu().numpy()
        judged = self._id_probe.judge(faces, self.dst_hold.landmarks, self._id_people, detail.cpu().numpy())
        return {f"id_swap_{k}": v for k, v in judged.items()}

    def _tensors(self, data: FaceData) -> tuple[torch.Tensor, torch.Tensor]:
        faces = torch.from_numpy(data.images).permute(0, 3, 1, 2).float().div(255).to(self.device)
        masks = torch.from_numpy(data.masks).float()[:, None].to(self.device)
        return faces, masks

    @torch.inference_mode()
    def preview(self) -> tuple[np.ndarray, list[str]]:
        """The preview grid (uint8 BGR), a column per face and a row per kind, and the rows' names: src,
        src reconstructed, src swapped to dst, dst, dst reconstructed, dst swapped to src: each side's face,
        how well its decoder rebuilds it, and the swap into the other identity."""
        src_data = self.src_hold if len(self.src_hold) else self.src_train
        dst_data = self.dst_hold if len(self.dst_hold) else self.dst_train
        n = min(PREVIEW_FACES, len(src_data), len(dst_data))
        src = self._tensors(src_data.subset(np.arange(n)))[0]
        dst = self._tensors(dst_data.subset(np.arange(n)))[0]
        out = self.model(src, dst)
        rows = {"src": src, "src reconstructed": out.pred_src, "src swapped to dst": self.model.to_dst(src), "dst": dst,
                "dst reconstructed": out.pred_dst, "dst swapped to src": out.pred_swap}
        grid = torch.cat([torch.cat(list(r.float()), 2) for r in rows.values()], 1)
        return (grid.permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8), list(rows)

    def write_preview(self) -> None:
        """``preview.png``, with its rows named for the training view (and a copy in preview_history/)."""
        grid, rows = self.preview()
        png = write_preview(self.model_dir, grid, self.iteration, rows=rows)
        if self.cfg.write_preview_history:
            atomic_write_bytes(self.model_dir / "preview_history" / f"{self.iteration:09d}.png", png)

    def report_eval(self) -> tuple[float, float]:
        if self._last_eval is not None and self._last_eval[0] == self.iteration:
            return self._last_eval[1]
        mean, std, sides = self.evaluate()
        self._last_eval = (self.iteration, (mean, std))
        if math.isfinite(mean):
            self.eval_log.write(self.iteration, {"ssim_mean": mean, "ssim_std": std, **sides,
                                                 "minutes": self.train_seconds() / 60})
            rule = self._id_probe.rule
            log.info(f"iteration {self.iteration}: held-out SSIM {mean:.4f} +- {std:.4f} (face only "
                     f"{sides['ssim_face_mean']:.4f} +- {sides['ssim_face_std']:.4f}); detail against the real faces: "
                     f"recon {sides['sharp_src']:.2f} src / {sides['sharp_dst']:.2f} dst, swap {sides['sharp_swap']:.2f}; "
                     f"dst faces swapped to src: a face is found in {100 * sides['id_swap_found']:.0f}%, "
                     f"{100 * sides['id_swap_is_src']:.0f}% are the src person, {100 * sides['id_swap_is_dst']:.0f}% "
                     f"the dst person ({rule.metric} to src {sides[f'id_swap_{rule.metric}_src']:.3f}, to dst "
                     f"{sides[f'id_swap_{rule.metric}_dst']:.3f}; same person when {rule.describe()})")
        return mean, std

    # ----------------------------------------------------------------------------------------- loop
    def run(self, max_steps: int | None = None) -> TrainResult:
        """Train until the target iteration, ``max_steps`` more steps, or Ctrl-C; always save at the end."""
        cfg = self.cfg
        if cfg.target_iter and self.iteration >= cfg.target_iter:
            log.info(f"model is already at iteration {self.iteration} >= target {cfg.target_iter}; raise --target-iter to go on")
            mean, std = self.group.on_main(self.report_eval) or (math.nan, math.nan)
            return TrainResult(self.iteration, {}, mean, std, "target")
        self.model.train()
        last_backup = time.monotonic()

        def backup(now: float) -> None:
            nonlocal last_backup
            if cfg.autobackup_hours and now - last_backup >= cfg.autobackup_hours * 3600:
                self.save()
                self.autobackup()
                last_backup = now

        def finish() -> tuple[float, float]:
            self.save()
            self.write_preview()
            return self.report_eval()

        losses, stopped = run_steps(self, max_steps, "train", backup)
        mean, std = self.group.on_main(finish) or (math.nan, math.nan)  # the held-out figures are rank 0's
        return TrainResult(self.iteration, losses, mean, std, stopped)

    def close(self) -> None:
        self.metrics.close()
        self.eval_log.close()


def train(cfg: SwapConfig, src_dir: str | Path, dst_dir: str | Path, model_dir: str | Path,
          max_steps: int | None = None) -> TrainResult:
    """Train (or resume) the model in ``model_dir``: the Python API behind ``facelab train``."""
    trainer = Trainer(cfg, src_dir, dst_dir, model_dir)
    try:
        return trainer.run(max_steps)
    finally:
        trainer.close()

