"""The two training loops: the sphere backbone (AM-softmax) and the uncertainty module (MLS loss).

Both share :func:`open_model_dir` (config saved next to the checkpoint, options that fix the network
checked on resume) and :func:`run_loop` (the shared step loop: progress bar, CSV/TensorBoard log, periodic atomic saves,
a save on Ctrl-C). A run resumes from the checkpoint in its model dir, exactly: step ``s`` draws its batch
(and flips) from ``(seed, s)``. Under torchrun every process trains on its rows of each batch and rank 0
alone writes (:mod:`facelab.core.distributed`).
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

from facelab.core.batches import StepBatches, index_batches
from facelab.core.checkpoint import load_checkpoint, save_checkpoint
from facelab.core.config import check_fixed_unchanged, config_to_dict, save_config
from facelab.core.device import autocast, grad_scaler
from facelab.core.distributed import Group, join
from facelab.core.errors import FacelabError
from facelab.core.files import atomic_path
from facelab.core.model_kinds import load_model_config
from facelab.core.logs import MetricsLog
from facelab.core.optim import adam, load_optimizer_state
from facelab.core.rng import seed_everything
from facelab.core.training import Every, open_run_dir, step_loop
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


def open_model_dir(cfg: Any, checkpoint_name: str, group: Group) -> tuple[Path, dict | None]:
    """Create or reopen a model dir: refuse changed fixed options, save the config (rank 0), load the checkpoint."""
    if not cfg.model_dir:
        raise FacelabError("--model-dir is required: the folder for the checkpoint, config and logs")
    if not cfg.data:
        raise FacelabError("--data is required: a folder with one sub-folder of face images per person")
    model_dir = Path(cfg.model_dir)
    saved = saved_config(type(cfg), model_dir)
    if saved is not None:
        check_fixed_unchanged(saved, cfg, str(model_dir))
    ckpt = open_run_dir(group, model_dir / checkpoint_name)
    if group.is_main:
        save_config(cfg, model_dir / CONFIG_FILE)
    return model_dir, load_checkpoint(ckpt) if ckpt else None


def set_stepped_lr(opt: torch.optim.Optimizer, base: float, lr_steps: list[int], step: int) -> float:
    """Set and return ``base`` divided by ten for each of ``lr_steps`` already reached (both PFE recipes)."""
    lr = base * 0.1 ** sum(step >= s for s in lr_steps)
    for group in opt.param_groups:
        group["lr"] = lr
    return lr


def run_loop(start: int, steps: int, step_fn: Callable[[int], dict[str, float]], save_fn: Callable[[int], None],
             metrics: MetricsLog, log_every: int, save_every: int, desc: str, group: Group) -> None:
    """``step_fn(step)`` until ``steps`` in the shared :func:`~facelab.core.training.step_loop`: a log row
    every ``log_every`` steps and at the last, a save every ``save_every`` and at the end (by rank 0);
    Ctrl-C saves, then stops the command."""
    at = [start]

    def step(_: Any) -> dict[str, float]:
        values = step_fn(at[0])
        at[0] += 1
        return values

    try:
        done, _, stopped = step_loop(start, steps, step, metrics.write, log_every, desc, log_last=True, unit="step",
                                     actions=[Every(save_every, save_fn, at_end="never")], group=group,
                                     postfix=lambda values: {k: f"{v:.4g}" for k, v in values.items()})
    finally:
        metrics.close()
    group.on_main(lambda: save_fn(done))
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


def load_or_build_pool(cfg: PFEConfig, model_dir: Path, backbone) -> FeaturePool:
    """The feature pool, cached in the model dir so a resumed run skips the backbone pass."""
    path, key = model_dir / POOL_FILE, _pool_key(cfg)
    cached = _cached_pool(path, key, backbone.feature_dim)
    if cached is not None:
        return cached
    ident = scan_identities(cfg.data, cfg.max_per_class)
    pool = build_pool(ident, backbone, FaceFinder(cfg.aligned), cfg.copies, cfg.degrade_prob, cfg.seed, cfg.workers)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, key=np.array(key), features=pool.features, mu=pool.mu, labels=pool.labels, degraded=pool.degraded)
    return pool


@torch.no_grad()
def pool_loss(module: torch.nn.Module, pool: FeaturePool, device: torch.device, seed: int, batch: int = 1024) -> float:
    """MLS loss on one fixed balanced sample of the pool: the before/after figure.

    A module that has trained is scored as it is used, in eval mode. An untrained one is scored, on a copy,
    with the sample's own batch statistics, as its first training step sees it: its BatchNorm has no
    running statistics yet, and the defaults (mean 0, variance 1) on a sphere network's raw feature map
    overflow sigma^2 into a NaN loss.
    """
    sampler = BalancedBatchSampler(pool.labels, max(1, batch // 8), 8)
    idx = sampler.sample(np.random.default_rng([seed, 999]))
    untrained = any(int(m.num_batches_tracked) == 0 for m in module.modules()
                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    scored = copy.deepcopy(module).train() if untrained else module.eval()
    log_sig = scored(torch.from_numpy(pool.features[idx]).to(device))
    return float(mls_loss(torch.from_numpy(pool.mu[idx]).to(device), log_sig, torch.from_numpy(pool.labels[idx]).to(device)))


def train_pfe(cfg: PFEConfig) -> dict[str, float]:
    """Train the uncertainty module; returns the fixed-sample MLS loss before and after this run (NaN in the
    other processes of a multi-process run: rank 0 measures them)."""
    group = join(cfg.device)
    device, shard = group.device, group.shard
    model_dir, state = open_model_dir(cfg, PFE_FILE, group)
    seed_everything(cfg.seed)
    backbone = load_backbone(cfg.backbone, str(device), cfg.precision)
    # rank 0 runs the backbone over every image and caches the pool; the other processes then read the cache
    built = group.on_main(lambda: load_or_build_pool(cfg, model_dir, backbone))
    pool = built if built is not None else load_or_build_pool(cfg, model_dir, backbone)
    module = build_module(cfg, backbone).to(device)
    opt = adam(module.parameters(), cfg.lr, weight_decay=cfg.weight_decay)
    scaler = grad_scaler(device, cfg.precision)
    start = 0
    if state is not None:
        load_module_state(module, state, model_dir / PFE_FILE)
        load_optimizer_state(opt, state["optimizer"])
        start = int(state["step"])
    forward = group.wrap(module)
    # the global batch holds classes_per_batch identities per process; each process takes whole identities,
    # so its genuine pairs are the global batch's that fall to it, as many in every process
    sampler = BalancedBatchSampler(pool.labels, shard.size(cfg.classes_per_batch), cfg.samples_per_class)
    if shard.world > 1 and sampler.classes < shard.size(cfg.classes_per_batch):
        raise FacelabError(f"the pool has {sampler.classes} identities, fewer than --classes-per-batch "
                           f"{cfg.classes_per_batch} x {shard.world} processes; lower --classes-per-batch")
    rows = shard.rows(cfg.classes_per_batch * cfg.samples_per_class)
    feats, mu, labels = torch.from_numpy(pool.features), torch.from_numpy(pool.mu), torch.from_numpy(pool.labels)
    before = group.on_main(lambda: pool_loss(module, pool, device, cfg.seed))

    def step_fn(step: int) -> dict[str, float]:
        idx = torch.from_numpy(sampler.sample(np.random.default_rng([cfg.seed, step]))[rows])
        set_stepped_lr(opt, cfg.lr, cfg.lr_steps, step)
        module.train()
        with autocast(device, cfg.precision):
            log_sig = forward(feats[idx].to(device))
        loss = mls_loss(mu[idx].to(device), log_sig.float(), labels[idx].to(device))  # fp32, outside autocast
        values = group.mean({"mls_loss": loss.item(), "mean_log_sigma_sq": log_sig.float().mean().item()})
        if not math.isfinite(values["mls_loss"]):
            raise FacelabError(f"the MLS loss is not finite at step {step}; lower --lr or check the backbone's features")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return values

    def save(step: int) -> None:
        save_checkpoint(model_dir / PFE_FILE, {"model": module.state_dict(), "optimizer": opt.state_dict(),
                                               "step": step, "config": config_to_dict(cfg)})

    run_loop(start, cfg.target_iter, step_fn, save, MetricsLog(model_dir, "pfe", resume_step=start, enabled=group.is_main),
             cfg.log_every, cfg.save_every, "pfe", group)
    after = group.on_main(lambda: pool_loss(module, pool, device, cfg.seed))
    if before is None or after is None:
        return {"loss_before": math.nan, "loss_after": math.nan, "pool_size": float(len(pool.labels))}
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
    group = join(cfg.device)
    device, shard = group.device, group.shard
    model_dir, state = open_model_dir(cfg, BACKBONE_FILE, group)
    seed_everything(cfg.seed)
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
    if len(ident.paths) < shard.size(cfg.batch_size):
        per = f" x {shard.world} processes" if shard.world > 1 else ""
        raise FacelabError(f"{cfg.data} has {len(ident.paths)} images, fewer than --batch-size {cfg.batch_size}{per}")
    net_train, head_train = group.wrap(net), group.wrap(head)
    count, rows = shard.size(cfg.batch_size), shard.rows(cfg.batch_size)
    batches = index_batches(FaceCrops(ident.paths, ident.labels, cfg.aligned),
                            StepBatches(len(ident.paths), count, cfg.seed, start), rows, cfg.workers, _collate)
    last: dict[str, float] = {}

    def step_fn(step: int) -> dict[str, float]:
        (crops, y), _ = next(batches)
        flip = torch.from_numpy((np.random.default_rng([cfg.seed, step]).random(count) < 0.5)[rows])
        crops[flip] = crops[flip].flip(2)  # NHWC: mirror along the width
        lr = set_stepped_lr(opt, cfg.lr, cfg.lr_steps, step)
        net.train()
        with autocast(device, cfg.precision):
            emb, _ = net_train(normalise_pixels(crops.numpy()).to(device))
        loss, acc = head_train(emb, y.to(device))  # AM-softmax in fp32, outside autocast
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        last.update(group.mean({"loss": loss.item(), "accuracy": acc.item()}), lr=lr)
        return dict(last)

    def save(step: int) -> None:
        save_checkpoint(model_dir / BACKBONE_FILE, {"model": net.state_dict(), "head": head.state_dict(),
                                                    "optimizer": opt.state_dict(), "step": step,
                                                    "config": config_to_dict(cfg), "identities": ident.names})

    run_loop(start, cfg.target_iter, step_fn, save,
             MetricsLog(model_dir, "backbone", resume_step=start, enabled=group.is_main), cfg.log_every,
             cfg.save_every, f"sphere{cfg.depth}", group)
    return last
