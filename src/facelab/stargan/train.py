"""The StarGAN training loop: ``d_train_repeat`` critic steps per generator step, resumable at any save.

One :class:`Trainer` holds both networks, their optimizers and loss scalers and its own random
generator (flips, target labels, penalty interpolation), so a checkpoint restores the whole state and a
resumed CPU run repeats the uninterrupted one. Under torchrun every process trains on its rows of each
batch (the generator's draws are made for the whole batch in every process) and rank 0 alone writes
(:mod:`facelab.core.distributed`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from facelab.core.batches import StepBatches, index_batches
from facelab.core.checkpoint import save_checkpoint
from facelab.core.config import check_fixed_unchanged, config_from_dict, config_to_dict, save_config
from facelab.core.device import autocast, grad_scaler
from facelab.core.distributed import Group, Shard, join
from facelab.core.errors import FacelabError
from facelab.core.files import atomic_write_text
from facelab.core.optim import adam, load_optimizer_state
from facelab.core.logs import MetricsLog
from facelab.core.rng import seed_everything
from facelab.core.training import Every, open_run_dir, step_loop
from facelab.stargan.checkpoint import FORMAT, checkpoint_path, read_stargan_checkpoint
from facelab.stargan.config import StarGANConfig
from facelab.stargan.data import CelebADataset
from facelab.stargan.losses import classification_loss, cycle_loss, gradient_penalty
from facelab.stargan.models import Generator, build_models
from facelab.stargan.split import load_split
from facelab.stargan.translate import write_sample_grid

log = logging.getLogger("facelab")

LOSS_NAMES = ("D/loss_real", "D/loss_fake", "D/loss_cls", "D/loss_gp", "G/loss_fake", "G/loss_rec", "G/loss_cls")
SAMPLE_COUNT = 8


def learning_rate(base: float, step: int, cfg: StarGANConfig) -> float:
    """The rate for iteration ``step``: constant, then falling linearly to 0 over the last
    ``num_iters_decay`` iterations, recomputed every ``lr_update_step`` (a pure function of the step,
    so resuming needs no schedule state)."""
    updated_at = step - step % max(1, cfg.lr_update_step)
    decay_start = cfg.target_iter - cfg.num_iters_decay
    if cfg.num_iters_decay <= 0 or updated_at <= decay_start:
        return base
    return base * max(0.0, (cfg.target_iter - updated_at) / cfg.num_iters_decay)


class Trainer:
    """Networks, optimizers, loss scalers and the step counter of one StarGAN run (this process's part of it)."""

    def __init__(self, cfg: StarGANConfig, group: Group):
        cfg.check()
        self.cfg, self.group, self.device = cfg, group, group.device
        device = group.device
        seed_everything(cfg.seed)
        self.g, self.d = (m.to(device).train() for m in build_models(cfg))
        # the steps that update a network call it through DistributedDataParallel under torchrun
        self.g_train, self.d_train = group.wrap(self.g), group.wrap(self.d)
        betas = (cfg.beta1, cfg.beta2)
        self.g_opt = adam(self.g.parameters(), cfg.g_lr, betas)
        self.d_opt = adam(self.d.parameters(), cfg.d_lr, betas)
        self.g_scaler = grad_scaler(device, cfg.precision)
        self.d_scaler = grad_scaler(device, cfg.precision)
        self.autocast = lambda: autocast(device, cfg.precision)
        self.autocast()  # refuses a bad precision (fp16 on the CPU) before any work is done
        self.rng = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.last = {name: math.nan for name in LOSS_NAMES}

    def _set_lr(self) -> None:
        for opt, base in ((self.g_opt, self.cfg.g_lr), (self.d_opt, self.cfg.d_lr)):
            for group in opt.param_groups:
                group["lr"] = learning_rate(base, self.step, self.cfg)

    def train_step(self, real: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """One critic update and, every ``d_train_repeat`` steps, one generator update, on ``real``: this
        process's rows of a batch whose labels are ``labels`` (all of them: the target labels are a
        permutation of the whole batch's, as in a one-process run)."""
        cfg, n = self.cfg, labels.shape[0]
        rows = self.group.shard.rows(real.shape[0])
        self._set_lr()
        flip = (torch.rand(n, generator=self.rng) < 0.5)[rows].view(-1, 1, 1, 1).to(real.device)
        real = torch.where(flip, real.flip(3), real).to(self.device, non_blocking=True)
        label_trg = labels[torch.randperm(n, generator=self.rng)][rows].to(self.device)
        label_org = labels[rows].to(self.device)
        alpha = torch.rand(n, 1, 1, 1, generator=self.rng)[rows].to(self.device)
        g_step = (self.step + 1) % cfg.d_train_repeat == 0

        # Critic: real images scored high and classified, fakes scored low, unit gradient norm between. The
        # networks run under autocast, every loss in fp32 outside it.
        self.d.requires_grad_(True)
        with self.autocast():
            with torch.set_grad_enabled(g_step):  # the fake's graph is reused by the generator step
                fake = self.g_train(real, label_trg)
            # real and fake through the critic as one batch: it has no normalisation, so each image scores
            # what a call of its own gives, and one call on 2m images is faster than two on m
            m = real.shape[0]
            out_src, out_cls = self.d_train(torch.cat([real, fake.detach()]))
        d_real = -out_src[:m].float().mean()
        d_cls = classification_loss(out_cls[:m], label_org)
        d_fake = out_src[m:].float().mean()
        d_gp = gradient_penalty(self.d_train, real, fake.detach(), alpha, self.d_scaler.get_scale(), self.autocast)
        d_loss = d_real + d_fake + cfg.lambda_cls * d_cls + cfg.lambda_gp * d_gp
        self.d_opt.zero_grad(set_to_none=True)
        self.d_scaler.scale(d_loss).backward()
        self.d_scaler.step(self.d_opt)
        self.d_scaler.update()
        losses = {"D/loss_real": d_real, "D/loss_fake": d_fake, "D/loss_cls": d_cls, "D/loss_gp": d_gp}

        if g_step:  # Generator: fool the critic, hit the target domain, and cycle back to the input.
            self.d.requires_grad_(False)
            with self.autocast():
                fake_src, fake_cls = self.d(fake)  # the plain critic: its parameters take no gradient here
                reconstructed = self.g_train(fake, label_org)
            g_fake = -fake_src.float().mean()
            g_cls = classification_loss(fake_cls, label_trg)
            g_rec = cycle_loss(real, reconstructed)
            g_loss = g_fake + cfg.lambda_rec * g_rec + cfg.lambda_cls * g_cls
            self.g_opt.zero_grad(set_to_none=True)
            self.g_scaler.scale(g_loss).backward()
            self.g_scaler.step(self.g_opt)
            self.g_scaler.update()
            losses.update({"G/loss_fake": g_fake, "G/loss_rec": g_rec, "G/loss_cls": g_cls})
        self.step += 1
        values = self.group.mean({k: float(v.detach()) for k, v in losses.items()})  # the whole batch's
        self.last.update(values)
        return values

    def state_dict(self) -> dict:
        return {
            "format": FORMAT, "config": config_to_dict(self.cfg), "step": self.step,
            "G": self.g.state_dict(), "D": self.d.state_dict(),
            "g_opt": self.g_opt.state_dict(), "d_opt": self.d_opt.state_dict(),
            "g_scaler": self.g_scaler.state_dict(), "d_scaler": self.d_scaler.state_dict(),
            "rng": self.rng.get_state(), "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.g.load_state_dict(state["G"])
        self.d.load_state_dict(state["D"])
        load_optimizer_state(self.g_opt, state["g_opt"])
        load_optimizer_state(self.d_opt, state["d_opt"])
        if state["g_scaler"]:
            self.g_scaler.load_state_dict(state["g_scaler"])
            self.d_scaler.load_state_dict(state["d_scaler"])
        self.rng.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])

    def save(self, path: Path) -> None:
        save_checkpoint(path, self.state_dict())


def training_batches(dataset: CelebADataset, cfg: StarGANConfig, start: int, shard: Shard):
    """Endless ((images, labels, indices) of this process's rows, indices of the whole batch) from iteration
    ``start`` on; batch ``b`` depends only on (seed, b), so a resumed run reads the batches it would have."""
    if len(dataset) < shard.size(cfg.batch_size):
        per = f" x {shard.world} processes" if shard.world > 1 else ""
        raise FacelabError(f"the training split has {len(dataset)} images, fewer than --batch-size "
                           f"{cfg.batch_size}{per}; lower --batch-size or hold out fewer test images")
    sampler = StepBatches(len(dataset), shard.size(cfg.batch_size), cfg.seed, start)
    return index_batches(dataset, sampler, shard.rows(cfg.batch_size), cfg.workers)


def train(cfg: StarGANConfig) -> Trainer:
    """Train (or resume the run in ``cfg.model_dir``) up to ``cfg.target_iter``; Ctrl-C saves first."""
    group = join(cfg.device)
    device, main = group.device, group.is_main
    out = Path(cfg.model_dir)
    trainer = Trainer(cfg, group)
    ckpt = checkpoint_path(out)
    if open_run_dir(group, ckpt, "StarGAN checkpoint folder"):
        state = read_stargan_checkpoint(ckpt)
        check_fixed_unchanged(config_from_dict(StarGANConfig, state["config"], str(ckpt)), cfg, str(ckpt))
        trainer.load_state_dict(state)
        log.info("resuming %s at iteration %d", ckpt, trainer.step)
    if main:
        save_config(cfg, out / "config.yaml")

    train_set = CelebADataset(cfg.image_root, load_split(cfg, "train"), cfg.crop_size, cfg.image_size)
    test_table = load_split(cfg, "test")
    if main:
        atomic_write_text(out / "test_split.txt", "".join(n + "\n" for n in test_table.names))
    sample_set = CelebADataset(cfg.image_root, test_table, cfg.crop_size, cfg.image_size) if test_table.names else train_set
    fixed = [sample_set[i] for i in range(min(SAMPLE_COUNT, len(sample_set)))]
    fixed_images = torch.stack([f[0] for f in fixed]).to(device)
    fixed_labels = torch.stack([f[1] for f in fixed])

    metrics = MetricsLog(out / "logs", "losses", resume_step=trainer.step, enabled=main)
    fid_log = MetricsLog(out / "logs", "fid", resume_step=trainer.step, enabled=main) if cfg.fid_every else None
    batches = training_batches(train_set, cfg, trainer.step, group.shard)
    labels = torch.from_numpy(train_set.table.labels)

    def step(batch: tuple[tuple[torch.Tensor, ...], torch.Tensor]) -> dict[str, float]:
        (images, _, _), indices = batch
        trainer.train_step(images, labels[indices])
        return {**trainer.last, "lr/g": trainer.g_opt.param_groups[0]["lr"], "lr/d": trainer.d_opt.param_groups[0]["lr"]}

    def sample_grid(step: int) -> None:
        write_sample_grid(out / "samples" / f"{step:06d}.jpg", trainer.g, fixed_images, fixed_labels,
                          cfg.selected_attrs, cfg.precision)

    actions = [Every(cfg.preview_every, sample_grid),
               Every(cfg.save_every, lambda step: trainer.save(ckpt), at_end="never")]  # the end: saved below
    if fid_log is not None:
        actions.append(Every(cfg.fid_every, lambda step: fid_log.write(step, logged_fid(trainer.g, sample_set, cfg, device)),
                             at_end="always"))
    try:
        _, _, stopped = step_loop(trainer.step, cfg.target_iter, step, metrics.write, cfg.log_every, "stargan",
                                  fetch=lambda: next(batches), actions=actions, group=group,
                                  postfix=lambda v: {"d_cls": f"{v['D/loss_cls']:.3f}", "g_rec": f"{v['G/loss_rec']:.3f}"})
    finally:
        metrics.close()
        if fid_log is not None:
            fid_log.close()
    group.on_main(lambda: trainer.save(ckpt))  # at the end and on Ctrl-C
    if stopped == "interrupted":
        log.info("saved iteration %d to %s before stopping; run the same command again to resume", trainer.step, ckpt)
        raise KeyboardInterrupt
    return trainer


@torch.inference_mode()
def logged_fid(g: Generator, test_set: CelebADataset, cfg: StarGANConfig, device: torch.device) -> dict[str, float]:
    """FID of the test split's translations (pooled and per domain) with the offline dlib-resnet128 features,
    on a forked RNG so the training run goes on exactly as without it."""
    from facelab.metrics.fid import make_extractor
    from facelab.stargan.evaluate import translation_fid

    with torch.random.fork_rng(devices=[]):
        result = translation_fid(g, test_set, make_extractor("dlib-resnet128"), device, cfg.batch_size,
                                 cfg.fid_images, cfg.precision)
    log.info("FID[%s] of %d test translations: %.2f", result["extractor"], result["images"],
             result[f"fid[{result['extractor']}]"])
    return {"fid": result[f"fid[{result['extractor']}]"], **{f"fid/{a}": v for a, v in result["per_domain"].items()},
            "fid/real_vs_real": math.nan if result["real_vs_real"] is None else result["real_vs_real"]}
