"""The two training loops: the sphere backbone (AM-softmax) and the uncertainty module (MLS loss).

Both share :func:`open_model_dir` (config saved next to the checkpoint, options that fix the network
checked on resume) and :func:`run_loop` (the shared step loop: progress bar, CSV/TensorBoard log, periodic atomic saves,
a save on Ctrl-C). A run resumes from the checkpoint in its model dir.
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

from facelab.core.checkpoint import load_checkpoint, resume_checkpoint, save_checkpoint
from facelab.core.config import check_fixed_unchanged, config_to_dict, save_config
from facelab.core.device import autocast, grad_scaler, resolve_device
from facelab.core.errors import FacelabError
from facelab.core.files import atomic_path, ensure_folder
from facelab.core.model_kinds import load_model_config
from facelab.core.logs import MetricsLog
from facelab.core.rng import seed_everything
from facelab.core.training import Every, step_loop
from facelab.io.images import read_image
from facelab.pfe.backbones import BACKBONE_FILE, SPHERE_SIZE, SphereNet, align_sphere, load_backbone, normalise_pixels
from facelab.pfe.config import BackboneConfig, PFEConfig
from facelab.pfe.data import BalancedBatchSampler, scan_identities
from facelab.pfe.features import FaceFinder, FeaturePool, build_pool
from facelab.pfe.losses import AMSoftmax, mls_loss
from facelab.pfe.model import PFE_FILE, build_module, load_module_state

log = logging.getLogger("facelab")
CONFIG_FILE = "config.yaml"


def saved_config(cls: type, model_dir: str | Path):
    """The config a model dir was made with, or None for a new dir (used as the base of the CLI flags)."""
    command = "facelab pfe train" + ("-backbone" if cls is BackboneConfig else "")
    return load_model_config(cls, model_dir, command) if model_dir else None


def open_model_dir(cfg: Any, checkpoint_name: str) -> tuple[Path, dict | None]:
    """Create or reopen a model dir: refuse changed fixed options, save the config, load the checkpoint."""
    if not cfg.model_dir:
        raise FacelabError("--model-dir is required: the folder for the checkpoint, config and logs")
    if not cfg.data:
        raise FacelabError("--data is required: a folder with one sub-folder of face images per person")
    model_dir = Path(cfg.model_dir)
    saved = saved_config(type(cfg), model_dir)
    if saved is not None:
        check_fixed_unchanged(saved, cfg, str(model_dir))
    ensure_folder(model_dir, "model dir")
    ckpt = resume_checkpoint(model_dir / checkpoint_name)
    save_config(cfg, model_dir / CONFIG_FILE)
    return model_dir, load_checkpoint(ckpt) if ckpt else None


def set_stepped_lr(opt: torch.optim.Optimizer, base: float, lr_steps: list[int], step: int) -> float:
    """Set and return ``base`` divided by ten for each of ``lr_steps`` already reached (both PFE recipes)."""
    lr = base * 0.1 ** sum(step >= s for s in lr_steps)
    for group in opt.param_groups:
        group["lr"] = lr
    return lr


def run_loop(start: int, steps: int, step_fn: Callable[[int], dict[str, float]], save_fn: Callable[[int], None],
             metrics: MetricsLog, log_every: int, save_every: int, desc: str) -> None:
    """``step_fn(step)`` until ``steps`` in the shared :func:`~facelab.core.training.step_loop`: a log row
    every ``log_every`` steps and at the last, a save every ``save_every`` and at the end; Ctrl-C saves,
    then stops the command."""
    at = [start]

    def step(_: Any) -> dict[str, float]:
        values = step_fn(at[0])
        at[0] += 1
        return values

    try:
        done, _, stopped = step_loop(start, steps, step, metrics.write, log_every, desc, log_last=True, unit="step",
                                     actions=[Every(save_every, save_fn, at_end="never")],
                                     postfix=lambda values: {k: f"{v:.4g}" for k, v in values.items()})
    finally:
        metrics.close()
    save_fn(done)
    if stopped == "interrupted":
        log.info("saved step %d before stopping; run the same command again to resume", done)
        raise KeyboardInterrupt


# --- uncertainty module -------------------------------------------------------------------------------

POOL_FILE = "pool.npz"


def _pool_key(cfg: PFEConfig) -> str:
    keys = ("data", "backbone", "aligned", "copies", "degrade_prob", "max_per_class", "seed")
    return json.dumps({k: getattr(cfg, k) for k in keys}, sort_keys=True)


def _cached_pool(path: Path, key: str, feature_dim: int) -> FeaturePool | None:
    """The pool cached at ``path`` if it was made with ``key``; None if absent, stale or damaged (a cache
    is rebuilt, never a reason to stop)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) == key and z["features"].shape[1] == feature_dim:
                pool = FeaturePool(z["features"], z["mu"], z["labels"], z["degraded"])
                if len({len(pool.features), len(pool.mu), len(pool.labels), len(pool.degraded)}) == 1:
                    return pool
            return None
    except Exception as exc:  # zipfile, numpy and OS errors of a damaged file: all mean "rebuild it"
        log.warning(f"{path} is damaged ({type(exc).__name__}); computing the feature pool again")
        return None


def load_or_build_pool(cfg: PFEConfig, model_dir: Path, backbone, rng: np.random.Generator) -> FeaturePool:
    """The feature pool, cached in the model dir so a resumed run skips the backbone pass."""
    path, key = model_dir / POOL_FILE, _pool_key(cfg)
    cached = _cached_pool(path, key, backbone.feature_dim)
    if cached is not None:
        return cached
    ident = scan_identities(cfg.data, cfg.max_per_class)
    pool = build_pool(ident, backbone, FaceFinder(cfg.aligned), cfg.copies, cfg.degrade_prob, rng)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, key=np.array(key), features=pool.features, mu=pool.mu, labels=pool.labels, degraded=pool.degraded)
    return pool


@torch.no_grad()
def pool_loss(module: torch.nn.Module, pool: FeaturePool, device: torch.device, seed: int, batch: int = 1024) -> float:
    """MLS loss (module in eval mode) on one fixed balanced sample of the pool: the before/after figure."""
    sampler = BalancedBatchSampler(pool.labels, max(1, batch // 8), 8)
    idx = sampler.sample(np.random.default_rng([seed, 999]))
    module.eval()
    log_sig = module(torch.from_numpy(pool.features[idx]).to(device))
    return float(mls_loss(torch.from_numpy(pool.mu[idx]).to(device), log_sig, torch.from_numpy(pool.labels[idx]).to(device)))


def train_pfe(cfg: PFEConfig) -> dict[str, float]:
    """Train the uncertainty module; returns the fixed-sample MLS loss before and after this run."""
    model_dir, state = open_model_dir(cfg, PFE_FILE)
    rng = seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    backbone = load_backbone(cfg.backbone, cfg.device, cfg.precision)
    pool = load_or_build_pool(cfg, model_dir, backbone, rng)
    module = build_module(cfg, backbone).to(device)
    opt = torch.optim.Adam(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    if state is not None:
        load_module_state(module, state, model_dir / PFE_FILE)
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
    sampler = BalancedBatchSampler(pool.labels, cfg.classes_per_batch, cfg.samples_per_class)
    feats, mu, labels = torch.from_numpy(pool.features), torch.from_numpy(pool.mu), torch.from_numpy(pool.labels)
    before = pool_loss(module, pool, device, cfg.seed)

    def step_fn(step: int) -> dict[str, float]:
        idx = torch.from_numpy(sampler.sample(np.random.default_rng([cfg.seed, step])))
        set_stepped_lr(opt, cfg.lr, cfg.lr_steps, step)
        module.train()
        with autocast(device, cfg.precision):
            log_sig = module(feats[idx].to(device))
        loss = mls_loss(mu[idx].to(device), log_sig.float(), labels[idx].to(device))
        if not torch.isfinite(loss):
            raise FacelabError(f"the MLS loss is not finite at step {step}; lower --lr or check the backbone's features")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"mls_loss": loss.item(), "mean_log_sigma_sq": log_sig.float().mean().item()}

    def save(step: int) -> None:
        save_checkpoint(model_dir / PFE_FILE, {"model": module.state_dict(), "optimizer": opt.state_dict(),
                                               "step": step, "config": config_to_dict(cfg)})

    run_loop(start, cfg.target_iter, step_fn, save, MetricsLog(model_dir, "pfe", resume_step=start), cfg.log_every,
             cfg.save_every, "pfe")
    after = pool_loss(module, pool, device, cfg.seed)
    log.info("MLS loss on a fixed pool sample: %.2f -> %.2f (%d faces, %d identities)",
             before, after, len(pool.labels), len(np.unique(pool.labels)))
    return {"loss_before": before, "loss_after": after, "pool_size": float(len(pool.labels))}


# --- sphere backbone ----------------------------------------------------------------------------------


class FaceCrops(torch.utils.data.Dataset):
    """112x96 RGB crops: resized if the images are pre-aligned, else detected and aligned on the fly."""

    def __init__(self, paths: list[Path], labels: np.ndarray, aligned: bool):
        self.paths, self.labels, self.aligned = paths, labels, aligned
        self._finder: FaceFinder | None = None  # built in each worker: dlib objects do not pickle

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        image = read_image(self.paths[i])
        if not self.aligned:
            self._finder = self._finder or FaceFinder(aligned=False)
            lms = self._finder.find(image)
            if lms is not None:
                return align_sphere(image, lms), int(self.labels[i])
        crop = cv2.resize(image, (SPHERE_SIZE[1], SPHERE_SIZE[0]), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), int(self.labels[i])


def _collate(items: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.stack([c for c, _ in items])), torch.tensor([y for _, y in items])


def train_backbone(cfg: BackboneConfig) -> dict[str, float]:
    """Train a sphere network with AM-softmax on an identity folder; returns the last logged values."""
    model_dir, state = open_model_dir(cfg, BACKBONE_FILE)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    ident = scan_identities(cfg.data)
    net = SphereNet(cfg.depth, cfg.embedding_size).to(device)
    head = AMSoftmax(cfg.embedding_size, len(ident.names), cfg.scale, cfg.margin).to(device)
    opt = torch.optim.SGD(list(net.parameters()) + list(head.parameters()), lr=cfg.lr, momentum=0.9,
                          weight_decay=cfg.weight_decay)
    scaler = grad_scaler(device, cfg.precision)
    start = 0
    if state is not None:
        if state["head"]["weight"].shape[0] != len(ident.names):
            raise FacelabError(f"{model_dir} was trained on {state['head']['weight'].shape[0]} identities, "
                               f"{cfg.data} has {len(ident.names)}; use the same data or a new --model-dir")
        net.load_state_dict(state["model"])
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
    if len(ident.paths) < cfg.batch_size:
        raise FacelabError(f"{cfg.data} has {len(ident.paths)} images, fewer than --batch-size {cfg.batch_size}")
    loader = torch.utils.data.DataLoader(
        FaceCrops(ident.paths, ident.labels, cfg.aligned), batch_size=cfg.batch_size, shuffle=True, drop_last=True,
        num_workers=cfg.workers, collate_fn=_collate, generator=torch.Generator().manual_seed(cfg.seed + start),
        persistent_workers=cfg.workers > 0)
    batches = itertools.chain.from_iterable(loader for _ in itertools.count())
    last: dict[str, float] = {}

    def step_fn(step: int) -> dict[str, float]:
        crops, y = next(batches)
        flip = torch.rand(len(crops)) < 0.5
        crops[flip] = crops[flip].flip(2)  # NHWC: mirror along the width
        lr = set_stepped_lr(opt, cfg.lr, cfg.lr_steps, step)
        net.train()
        with autocast(device, cfg.precision):
            emb, _ = net(normalise_pixels(crops.numpy()).to(device))
        loss, acc = head(emb, y.to(device))
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        last.update(loss=loss.item(), accuracy=acc.item(), lr=lr)
        return dict(last)

    def save(step: int) -> None:
        save_checkpoint(model_dir / BACKBONE_FILE, {"model": net.state_dict(), "head": head.state_dict(),
                                                    "optimizer": opt.state_dict(), "step": step,
                                                    "config": config_to_dict(cfg), "identities": ident.names})

    run_loop(start, cfg.target_iter, step_fn, save, MetricsLog(model_dir, "backbone", resume_step=start), cfg.log_every,
             cfg.save_every, f"sphere{cfg.depth}")
    return last
