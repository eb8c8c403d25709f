"""facelab's trainers against plain reference loops, alternated in one process on the same batches, as JSON.

    python3 benchmarks/reference_loops.py --trainer stargan                       # 128 px, batch 16, n_critic 5
    python3 benchmarks/reference_loops.py --trainer original quick96 saehd-df-ud-128 xseg pfe-head
    python3 benchmarks/reference_loops.py --trainer stargan --precision bf16 --image-size 64 --batch-size 8
    python3 benchmarks/reference_loops.py --trainer stargan --image-size 64 --batch-size 8 --processes  # a process each

Why: "facelab is faster" means faster than what a user would otherwise run, at the same settings and
with the same algorithm. Each reference loop here is the training step written the straightforward
PyTorch way from the paper or the reference implementation: fp32, contiguous NCHW, every loss term as
the recipe spells it (DeepFaceLab's 2-D Gaussian window for SSIM, the official StarGAN solver's update
order with the gradient penalty through autograd.grad and the fake recomputed for the generator, PFE's
all-pairs MLS matrix), optimisers as the papers give them. The networks are facelab's own nn.Modules,
loaded with the same seeded weights, so both sides do the same arithmetic; what differs is how the step
around them is done. :func:`alternate.race` checks the losses agree on the first step (and stay close),
then times alternated pairs.

Batches are made once, before timing, by facelab's own batch code from real CelebA images (the 4800 of
../shared/data/celeba; StarGAN reads them at its crop and size; the swap and XSeg trainers get centre
crops with an elliptic face mask, whose content does not change the step's cost). Both sides get the same
tensors, so batch production is not timed (in facelab it runs in worker processes beside the step;
benchmarks/profile_step.py measures it). A "unit" is one training step, or for StarGAN one cycle of
``d_train_repeat`` steps (critic steps, the last with the generator step), so both kinds count in
proportion.

With ``--processes`` each side runs as a process of its own instead (alternated ABBA, the same batches
and weights in every process, the same loss check), so what facelab sets for its whole training process
counts as well: its training loop's malloc setting (core.memory), which the in-process race leaves at
glibc's defaults for both sides. The reference side's process runs as anyone runs the official code.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from alternate import emit, machine, process_race, race, run_side  # noqa: E402

CELEBA = Path(__file__).resolve().parents[2] / "shared" / "data" / "celeba"
SWAP_RUNS = {
    "original": dict(model="original"),
    "quick96": dict(model="quick96"),
    "saehd-df-ud-128": dict(model="saehd", archi="df-ud", resolution=128, face_type="whole"),
}
TRAINERS = (*SWAP_RUNS, "xseg", "stargan", "pfe-head")
# --tiny: every trainer's network and batch shrunk so a test runs the whole comparison in seconds
TINY = {
    "swap": dict(model="saehd", archi="df-ud", resolution=64, face_type="whole", ae_dims=32, e_dims=8, d_dims=8,
                 d_mask_dims=4, batch_size=2),
    "xseg": dict(resolution=64, base_channels=4, batch_size=2),
    "stargan": dict(image_size=32, batch_size=2, g_conv_dim=8, d_conv_dim=8, g_repeat_num=1, d_repeat_num=4,
                    d_train_repeat=2),
}
# (first unit, later units). fp32 against fp32 on the first unit: rounding alone (other kernels, another
# summation order). Later units drift further: Adam's steps are +-lr for gradients near 0, whatever their
# rounding, so two fp32 runs part by ~1 % within a StarGAN cycle or two. bf16 against fp32: bf16's 3
# significant digits in the networks (the losses stay fp32).
TOLERANCES = {"fp32": (1e-4, 5e-2), "bf16": (3e-2, 1e-1)}


@dataclass
class Case:
    """One trainer's two sides: ``facelab(unit)`` and ``reference(unit)`` each return the unit's losses."""

    facelab: Callable[[Any], dict[str, float]]
    reference: Callable[[Any], dict[str, float]]
    units: list
    settings: dict
    cleanup: list = field(default_factory=list)
    make_batch: Callable[[int], Any] | None = None  # facelab's batch production, for profile_step.py
    first_step: Callable[[str], bool] = lambda name: True  # the losses of unit 0 that come before any update
    curve_rtol: dict[str, float] | None = None  # per precision, where this trainer's curves part faster
    judged_units: int | None = None  # how many units' curves the check judges (None: all)

    def tolerances(self, precision: str) -> tuple[float, float]:
        """The loss check's (first-step, curve) relative tolerances at ``precision`` for this trainer."""
        first, curve = TOLERANCES[precision]
        return first, (self.curve_rtol or {}).get(precision, curve)


# --------------------------------------------------------------------------------------------- real data
def celeba_rgb(count: int, size: int, crop: int = 178) -> tuple[np.ndarray, list[str], str]:
    """``count`` real CelebA images as StarGAN reads them (centre crop ``crop``, resized to ``size``, RGB
    NCHW float32 in [-1, 1]), their file names and where they came from."""
    from facelab.io.images import read_image
    from facelab.stargan.data import preprocess

    folder, source = CELEBA / "images", str(CELEBA / "images")
    if not folder.is_dir():  # no shared data: the bundled portraits in CelebA's layout
        from facelab.samples.celeba import make_sample_celeba

        folder = make_sample_celeba(tempfile.mkdtemp(prefix="facelab-refloops-"), count=count)[0]
        source = "facelab.samples.celeba (no shared data)"
    names = sorted(p.name for p in folder.glob("*.jpg"))[:count]
    return np.stack([preprocess(read_image(folder / n), crop, size) for n in names]), names, source


def celeba_faces(count: int, size: int) -> tuple[np.ndarray, str]:
    """``count`` real CelebA faces as BGR uint8 ``(N, size, size, 3)`` crops, for the swap and XSeg trainers."""
    rgb, _, source = celeba_rgb(count, size)
    bgr = ((rgb.transpose(0, 2, 3, 1)[..., ::-1] + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    return np.ascontiguousarray(bgr), source


def face_masks(n: int, res: int) -> tuple[np.ndarray, np.ndarray]:
    """An elliptic face mask and eyes/mouth boxes, the same for every face (the step's cost ignores their shape)."""
    yy, xx = np.mgrid[:res, :res] / res
    mask = (((xx - 0.5) / 0.33) ** 2 + ((yy - 0.55) / 0.42) ** 2 < 1).astype(np.uint8)
    em = np.zeros_like(mask)
    em[int(res * 0.38):int(res * 0.48), int(res * 0.25):int(res * 0.75)] = 1
    em[int(res * 0.7):int(res * 0.8), int(res * 0.35):int(res * 0.65)] = 1
    return np.repeat(mask[None], n, 0), np.repeat(em[None], n, 0)


# --------------------------------------------------------------------------------------------- plain pieces
def gaussian_2d(size: int, sigma: float) -> torch.Tensor:
    """The normalised 2-D Gaussian window, as DeepFaceLab builds it (outer product of the 1-D one)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    k = np.outer(g, g)
    return torch.from_numpy(k / k.sum()).float()


def plain_dssim(a: torch.Tensor, b: torch.Tensor, size: int) -> torch.Tensor:
    """DeepFaceLab's ``nn.dssim``: four depthwise convolutions with the full 2-D window, valid padding
    (the window's sigma as facelab sets it, 1.5 * size / 11)."""
    ch = a.shape[1]
    k = gaussian_2d(size, 1.5 * size / 11.0).to(a)[None, None].repeat(ch, 1, 1, 1)

    def reducer(x):
        return F.conv2d(x, k, groups=ch)

    c1, c2 = 0.01**2, 0.03**2
    mean0, mean1 = reducer(a), reducer(b)
    num0 = mean0 * mean1 * 2.0
    den0 = mean0**2 + mean1**2
    luminance = (num0 + c1) / (den0 + c1)
    num1 = reducer(a * b) * 2.0
    den1 = reducer(a**2 + b**2)
    cs = (num1 - num0 + c2) / (den1 - den0 + c2)
    return (1.0 - (luminance * cs).mean()) / 2.0


def plain_blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Gaussian blur of sigma ``radius`` with the 2-D window (facelab's size and replicate padding)."""
    size = 2 * int(radius * 2) + 1
    ch = x.shape[1]
    k = gaussian_2d(size, float(radius)).to(x)[None, None].repeat(ch, 1, 1, 1)
    return F.conv2d(F.pad(x, (size // 2,) * 4, mode="replicate"), k, groups=ch)


class PlainAdaBelief:
    """AdaBelief as the paper's Algorithm 1 gives it (bias-corrected, eps inside and outside the root),
    one parameter at a time."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-16):
        self.params, self.lr, self.betas, self.eps, self.t = list(params), lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.s = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        self.t += 1
        for p, m, s in zip(self.params, self.m, self.s):
            if p.grad is None:
                continue
            g = p.grad
            m.copy_(b1 * m + (1 - b1) * g)
            s.copy_(b2 * s + (1 - b2) * (g - m) ** 2 + self.eps)
            m_hat = m / (1 - b1**self.t)
            s_hat = s / (1 - b2**self.t)
            p.sub_(self.lr * m_hat / (s_hat.sqrt() + self.eps))


# --------------------------------------------------------------------------------------------- swap
def plain_forward(model, src: torch.Tensor, dst: torch.Tensor):
    """DeepFaceLab's SAEHD graph as its model files write it, one call per part and input: the encoder on
    src, then on dst; each decoder on its own code. Only what the loss reads (the reconstructions and their
    masks): TensorFlow evaluates no more of the graph for the training op when the style losses are off."""
    from facelab.swap.models.base import DFSwap

    if isinstance(model, DFSwap):
        src_code, dst_code = model.encoder(src), model.encoder(dst)
        return (*model.decoder_src(src_code), *model.decoder_dst(dst_code))
    src_enc, dst_enc = model.encoder(src), model.encoder(dst)
    src_ab, dst_ab, dst_b = model.inter_AB(src_enc), model.inter_AB(dst_enc), model.inter_B(dst_enc)
    return (*model.decoder(torch.cat([src_ab, src_ab], 1)), *model.decoder(torch.cat([dst_b, dst_ab], 1)))


def swap_case(name: str, precision: str, batch_size: int | None, units: int, tiny: bool = False,
              options: dict | None = None) -> Case:
    """facelab's swap Trainer.step against DeepFaceLab's SAEHD step (:func:`plain_forward`): masked DSSIM
    + MSE per side, the mask loss, one AdaBelief update of the whole autoencoder (GAN, true-face and style
    terms off: the defaults)."""
    if options and (options.get("face_style_power") or options.get("bg_style_power") or options.get("gan_power")
                    or options.get("true_face_power")):
        raise SystemExit("the reference swap loop has no GAN, true-face or style terms; race those with --against")
    from facelab.swap.config import SwapConfig, apply_preset
    from facelab.swap.data import FaceData
    from facelab.swap.models import build_model
    from facelab.swap.train import Trainer

    given = {"batch_size"} if batch_size else set()
    run = {**(TINY["swap"] if tiny else SWAP_RUNS[name]), **({"batch_size": batch_size} if batch_size else {}),
           **(options or {})}
    cfg = apply_preset(SwapConfig(**run, device="cpu", precision=precision, workers=0, eval_every=0, eval_faces=0,
                                  preview_every=10**9, log_every=10**9, save_every_minutes=10**9), given)
    images, source = celeba_faces(8 if tiny else 64, cfg.resolution)
    masks, em = face_masks(len(images), cfg.resolution)
    faces = FaceData(images, masks, em, np.zeros(len(images), np.float32), np.zeros((len(images), 68, 2), np.float32))
    tmp = tempfile.TemporaryDirectory()
    trainer = Trainer(cfg, faces, faces, tmp.name)
    batches = [trainer.batches[i] for i in range(units)]
    model = build_model(cfg)
    model.load_state_dict(trainer.model.state_dict())
    model.train()
    opt = PlainAdaBelief(model.parameters(), lr=cfg.lr, eps=1e-16)
    res, k = cfg.resolution, int(cfg.resolution / 11.6)

    def side(target, mask, pred, pred_mask):
        blur = torch.clamp(plain_blur(mask, max(1, res // 32)), 0, 0.5) * 2
        t, p = target * blur, pred * blur
        if res < 256:
            loss = 10 * plain_dssim(p, t, k)
        else:
            loss = 5 * plain_dssim(p, t, k) + 5 * plain_dssim(p, t, int(res / 23.2))
        return loss + 10 * torch.mean((p - t) ** 2) + 10 * torch.mean((pred_mask - mask) ** 2)

    def reference(b):
        pred_src, pred_src_mask, pred_dst, pred_dst_mask = plain_forward(model, b["src_input"], b["dst_input"])
        src = side(b["src_target"], b["src_mask"], pred_src, pred_src_mask)
        dst = side(b["dst_target"], b["dst_mask"], pred_dst, pred_dst_mask)
        total = src + dst
        opt.zero_grad()
        total.backward()
        opt.step()
        return {"src_loss": src.item(), "dst_loss": dst.item(), "total": total.item()}

    settings = {"model": cfg.model, "archi": cfg.archi if cfg.model != "original" else "original",
                "resolution": res, "batch_size": cfg.batch_size, "optimizer": cfg.optimizer, "data": source,
                "channels_last": trainer.memory_format == torch.channels_last, "options": options or {}}
    return Case(trainer.step, reference, batches, settings, [trainer.close, tmp.cleanup], trainer.batches.__getitem__)


# --------------------------------------------------------------------------------------------- XSeg
def xseg_case(precision: str, batch_size: int | None, resolution: int, units: int, tiny: bool = False) -> Case:
    """facelab's XSeg Trainer.step against the plain segmenter step: BCE on the logits + soft Dice, Adam."""
    from facelab.xseg import train as xseg_train
    from facelab.xseg.config import XSegConfig
    from facelab.xseg.data import LabelledFaces
    from facelab.xseg.network import Segmenter

    cfg = XSegConfig(**{"resolution": resolution, "batch_size": batch_size or 8, **(TINY["xseg"] if tiny else {})},
                     device="cpu", precision=precision, eval_faces=0, workers=0)
    resolution = cfg.resolution
    images, source = celeba_faces(8 if tiny else 64, resolution)
    labels = face_masks(len(images), resolution)[0]
    tmp = tempfile.TemporaryDirectory()
    # the trainer reads labelled facesets from disk; these faces are in memory already
    with mock.patch.object(xseg_train, "load_labelled", lambda *a, **k: LabelledFaces(images, labels)):
        trainer = xseg_train.Trainer(cfg, ["in-memory"], tmp.name)
    batches = [trainer.batches[i] for i in range(units)]
    model = Segmenter(cfg.resolution, cfg.base_channels)
    model.load_state_dict(trainer.model.state_dict())
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    def reference(b):
        logits = model(b["face"])
        target = b["label"]
        bce = F.binary_cross_entropy_with_logits(logits, target)
        prob = torch.sigmoid(logits)
        dice = 1 - (2 * (prob * target).sum((1, 2, 3)) + 1) / (prob.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
        loss = bce + dice.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    settings = {"resolution": resolution, "base_channels": cfg.base_channels, "batch_size": cfg.batch_size,
                "data": source}
    return Case(trainer.step, reference, batches, settings, [trainer.close, tmp.cleanup], trainer.batches.__getitem__)


# --------------------------------------------------------------------------------------------- StarGAN
class OfficialResidualBlock(torch.nn.Module):
    """yunjey/stargan model.py's ResidualBlock, as written there."""

    def __init__(self, dim_in, dim_out):
        super().__init__()
        nn = torch.nn
        self.main = nn.Sequential(
            nn.Conv2d(dim_in, dim_out, kernel_size=3, stride=1, padding=1, bias=False),
            nn.InstanceNorm2d(dim_out, affine=True, track_running_stats=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim_out, dim_out, kernel_size=3, stride=1, padding=1, bias=False),
            nn.InstanceNorm2d(dim_out, affine=True, track_running_stats=True))

    def forward(self, x):
        return x + self.main(x)


class OfficialGenerator(torch.nn.Module):
    """yunjey/stargan model.py's Generator (same layers and parameter names as facelab's)."""

    def __init__(self, conv_dim=64, c_dim=5, repeat_num=6):
        super().__init__()
        nn = torch.nn
        layers = [nn.Conv2d(3 + c_dim, conv_dim, kernel_size=7, stride=1, padding=3, bias=False),
                  nn.InstanceNorm2d(conv_dim, affine=True, track_running_stats=True), nn.ReLU(inplace=True)]
        curr_dim = conv_dim
        for _ in range(2):
            layers += [nn.Conv2d(curr_dim, curr_dim * 2, kernel_size=4, stride=2, padding=1, bias=False),
                       nn.InstanceNorm2d(curr_dim * 2, affine=True, track_running_stats=True), nn.ReLU(inplace=True)]
            curr_dim *= 2
        layers += [OfficialResidualBlock(curr_dim, curr_dim) for _ in range(repeat_num)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(curr_dim, curr_dim // 2, kernel_size=4, stride=2, padding=1, bias=False),
                       nn.InstanceNorm2d(curr_dim // 2, affine=True, track_running_stats=True), nn.ReLU(inplace=True)]
            curr_dim //= 2
        layers += [nn.Conv2d(curr_dim, 3, kernel_size=7, stride=1, padding=3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x, c):
        c = c.view(c.size(0), c.size(1), 1, 1)
        c = c.repeat(1, 1, x.size(2), x.size(3))
        return self.main(torch.cat([x, c], dim=1))


class OfficialDiscriminator(torch.nn.Module):
    """yunjey/stargan model.py's Discriminator (facelab names its two heads ``src`` and ``cls``)."""

    def __init__(self, image_size=128, conv_dim=64, c_dim=5, repeat_num=6):
        super().__init__()
        nn = torch.nn
        layers = [nn.Conv2d(3, conv_dim, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.01)]
        curr_dim = conv_dim
        for _ in range(1, repeat_num):
            layers += [nn.Conv2d(curr_dim, curr_dim * 2, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.01)]
            curr_dim *= 2
        self.main = nn.Sequential(*layers)
        self.conv1 = nn.Conv2d(curr_dim, 1, kernel_size=3, stride=1, padding=1, bias=False)
        self.conv2 = nn.Conv2d(curr_dim, c_dim, kernel_size=int(image_size / 2**repeat_num), bias=False)

    def forward(self, x):
        h = self.main(x)
        out_src = self.conv1(h)
        out_cls = self.conv2(h)
        return out_src, out_cls.view(out_cls.size(0), out_cls.size(1))


def official_models(cfg, g_state: dict, d_state: dict):
    """The official networks holding facelab's weights (their running-stat buffers, unused in training,
    start at their defaults)."""
    g = OfficialGenerator(cfg.g_conv_dim, cfg.c_dim, cfg.g_repeat_num)
    d = OfficialDiscriminator(cfg.image_size, cfg.d_conv_dim, cfg.c_dim, cfg.d_repeat_num)
    missing, unexpected = g.load_state_dict(g_state, strict=False)
    if unexpected or any(not k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in missing):
        raise RuntimeError(f"facelab's generator no longer matches the official one: {missing} {unexpected}")
    names = {"src.weight": "conv1.weight", "cls.weight": "conv2.weight"}
    d.load_state_dict({names.get(k, k): v for k, v in d_state.items()})
    return g, d


def stargan_case(precision: str, batch_size: int | None, image_size: int, units: int, tiny: bool = False,
                 options: dict | None = None) -> Case:
    """facelab's StarGAN Trainer.train_step against the official code (Choi et al. 2018, yunjey/stargan):
    its networks (model.py, InstanceNorm2d with running stats) loaded with facelab's weights, and its
    solver.py loop: D on real, fake and the interpolate (gradient penalty by autograd.grad with
    create_graph), both optimisers' grads reset, D updated; every n_critic steps the fake generated again,
    G updated through D (whose weights also collect gradients), the reconstruction through G again."""
    from facelab.stargan.config import StarGANConfig
    from facelab.stargan.data import read_attributes
    from facelab.core.distributed import Group
    from facelab.stargan.train import Trainer

    cfg = StarGANConfig(**{"batch_size": batch_size or 16, "image_size": image_size, **(TINY["stargan"] if tiny else {}),
                           **(options or {})}, device="cpu", precision=precision)
    image_size = cfg.image_size
    n, repeat = cfg.batch_size, cfg.d_train_repeat
    rgb, names, source = celeba_rgb(n * repeat * units, image_size, cfg.crop_size)
    real = torch.from_numpy(rgb)
    if CELEBA.is_dir():
        table = read_attributes(CELEBA / "list_attr_celeba.txt", cfg.selected_attrs)
        order = {name: i for i, name in enumerate(table.names)}
        labels = torch.from_numpy(table.labels[[order[x] for x in names]])
    else:
        labels = (torch.rand(len(real), cfg.c_dim, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    steps = [(real[i : i + n], labels[i : i + n]) for i in range(0, len(real), n)]
    cycles = [steps[u * repeat : (u + 1) * repeat] for u in range(units)]

    trainer = Trainer(cfg, Group(torch.device("cpu")))  # one process
    g, d = official_models(cfg, trainer.g.state_dict(), trainer.d.state_dict())
    g.train(), d.train()
    g_opt = torch.optim.Adam(g.parameters(), cfg.g_lr, (cfg.beta1, cfg.beta2))
    d_opt = torch.optim.Adam(d.parameters(), cfg.d_lr, (cfg.beta1, cfg.beta2))
    rng = torch.Generator().manual_seed(cfg.seed)  # the trainer's draws, in its order: flips, targets, alpha
    counter = [0]

    def classification_loss(logit, target):
        return F.binary_cross_entropy_with_logits(logit, target, reduction="sum") / logit.size(0)

    def gradient_penalty(y, x):
        weight = torch.ones(y.size())
        dydx = torch.autograd.grad(outputs=y, inputs=x, grad_outputs=weight, retain_graph=True, create_graph=True,
                                   only_inputs=True)[0]
        dydx = dydx.view(dydx.size(0), -1)
        return torch.mean((torch.sqrt(torch.sum(dydx**2, dim=1)) - 1) ** 2)

    def reset_grad():
        g_opt.zero_grad()
        d_opt.zero_grad()

    def reference_step(x_real, label_org):
        flip = torch.rand(n, generator=rng) < 0.5
        x_real = torch.where(flip.view(-1, 1, 1, 1), x_real.flip(3), x_real)
        label_trg = label_org[torch.randperm(n, generator=rng)]
        alpha = torch.rand(n, 1, 1, 1, generator=rng)
        out_src, out_cls = d(x_real)
        d_loss_real = -torch.mean(out_src)
        d_loss_cls = classification_loss(out_cls, label_org)
        x_fake = g(x_real, label_trg)
        out_src, out_cls = d(x_fake.detach())
        d_loss_fake = torch.mean(out_src)
        x_hat = (alpha * x_real.data + (1 - alpha) * x_fake.data).requires_grad_(True)
        out_src, _ = d(x_hat)
        d_loss_gp = gradient_penalty(out_src, x_hat)
        d_loss = d_loss_real + d_loss_fake + cfg.lambda_cls * d_loss_cls + cfg.lambda_gp * d_loss_gp
        reset_grad()
        d_loss.backward()
        d_opt.step()
        losses = {"D/loss_real": d_loss_real.item(), "D/loss_fake": d_loss_fake.item(),
                  "D/loss_cls": d_loss_cls.item(), "D/loss_gp": d_loss_gp.item()}
        counter[0] += 1
        if counter[0] % repeat == 0:
            x_fake = g(x_real, label_trg)
            out_src, out_cls = d(x_fake)
            g_loss_fake = -torch.mean(out_src)
            g_loss_cls = classification_loss(out_cls, label_trg)
            x_reconst = g(x_fake, label_org)
            g_loss_rec = torch.mean(torch.abs(x_real - x_reconst))
            g_loss = g_loss_fake + cfg.lambda_rec * g_loss_rec + cfg.lambda_cls * g_loss_cls
            reset_grad()
            g_loss.backward()
            g_opt.step()
            losses.update({"G/loss_fake": g_loss_fake.item(), "G/loss_rec": g_loss_rec.item(),
                           "G/loss_cls": g_loss_cls.item()})
        return losses

    def cycle(step):
        def run(unit):
            out = {}
            for j, (x, y) in enumerate(unit):
                out.update({f"{k}@{j + 1}": v for k, v in step(x, y).items()})
            return out
        return run

    settings = {"image_size": image_size, "batch_size": n, "c_dim": cfg.c_dim, "d_train_repeat": repeat,
                "unit": f"one cycle of {repeat} steps ({repeat} critic updates, 1 generator update)", "data": source}
    make_batch = None
    if CELEBA.is_dir():  # what the trainer's DataLoader does per step: decode, crop, resize, stack
        from facelab.stargan.data import CelebADataset

        dataset = CelebADataset(CELEBA / "images", table, cfg.crop_size, image_size)

        def make_batch(i):
            items = [dataset[(i * n + j) % len(dataset)] for j in range(n)]
            return torch.stack([it[0] for it in items]), torch.stack([it[1] for it in items])
    # A GAN's two fp32 runs part fastest: Adam turns rounding-sized gradient differences near 0 into +-lr
    # steps, and each network's step moves the other's target: 0.3 % after one cycle, 2 % after two, then
    # 4-30 % (128 px, batch 16). The check judges the first two cycles; the later ones are reported.
    return Case(cycle(trainer.train_step), cycle(reference_step), cycles, settings, make_batch=make_batch,
                first_step=lambda name: name.endswith("@1"), judged_units=2)


# --------------------------------------------------------------------------------------------- PFE head
def pfe_pool(per_class: int, tiny: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(features, mu, labels) of real CelebA faces through the dlib backbone, cached in the temp folder;
    random stand-ins of the same shape where dlib or the data are missing."""
    cache = Path(tempfile.gettempdir()) / f"facelab-refloops-pfe-pool-{per_class}.npz"
    if tiny:
        rng = np.random.default_rng(0)
        labels = np.repeat(np.arange(16), per_class)
        return (rng.normal(size=(len(labels), 48)).astype(np.float32), rng.normal(size=(len(labels), 128)).astype(np.float32),
                labels, "random stand-ins (--tiny)")
    if cache.is_file():
        with np.load(cache) as z:
            return z["features"], z["mu"], z["labels"], str(z["source"])
    try:
        from facelab.pfe.backbones import DlibBackbone
        from facelab.pfe.data import scan_identities
        from facelab.pfe.features import FaceFinder, build_pool

        pool = build_pool(scan_identities(CELEBA, per_class), DlibBackbone(), FaceFinder(aligned=True), 1, 0.3, 0)
        out = pool.features, pool.mu, pool.labels, f"{CELEBA} through dlib-resnet128"
    except Exception as exc:  # noqa: BLE001 - any missing piece: the step's cost does not depend on the values
        rng = np.random.default_rng(0)
        labels = np.repeat(np.arange(160), per_class)
        out = (rng.normal(size=(len(labels), 48)).astype(np.float32), rng.normal(size=(len(labels), 128)).astype(np.float32),
               labels, f"random stand-ins ({type(exc).__name__}: {exc})"[:200])
    np.savez(cache, features=out[0], mu=out[1], labels=out[2], source=np.array(out[3]))
    return out


def pfe_case(precision: str, batch_size: int | None, units: int, tiny: bool = False) -> Case:
    """PFE's uncertainty-module step (facelab's UncertaintyModule, mls_loss and optimiser settings, as
    ``facelab pfe train`` composes them; the step itself is a closure inside train_pfe) against the
    reference's loss: the full batch x batch matrix of negative MLS scores, masked to genuine pairs off
    the diagonal (Shi & Jain's TensorFlow ``mutual_likelihood_score_loss``)."""
    from facelab.core.device import autocast
    from facelab.pfe.config import PFEConfig
    from facelab.pfe.data import BalancedBatchSampler
    from facelab.pfe.losses import mls_loss
    from facelab.pfe.uncertainty import UncertaintyModule

    cfg = PFEConfig(precision=precision)
    samples = cfg.samples_per_class
    classes = (batch_size // samples) if batch_size else (8 if tiny else cfg.classes_per_batch)
    feats, mu, labels, source = pfe_pool(8, tiny)
    sampler = BalancedBatchSampler(labels, classes, samples)
    idx = [sampler.sample(np.random.default_rng([cfg.seed, s])) for s in range(units)]
    feats, mu, labels = torch.from_numpy(feats), torch.from_numpy(mu), torch.from_numpy(labels)
    torch.manual_seed(cfg.seed)
    module = UncertaintyModule(feats.shape[1], mu.shape[1], cfg.hidden)
    ref = UncertaintyModule(feats.shape[1], mu.shape[1], cfg.hidden)
    ref.load_state_dict(module.state_dict())
    opt = torch.optim.Adam(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    device = torch.device("cpu")

    def facelab(i):
        i = torch.from_numpy(i)
        module.train()
        with autocast(device, precision):
            log_sig = module(feats[i].to(device))
        loss = mls_loss(mu[i].to(device), log_sig.float(), labels[i].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"mls_loss": loss.item()}

    def reference(i):
        i = torch.from_numpy(i)
        x = F.normalize(mu[i], dim=-1)
        sigma_sq = ref(feats[i]).exp()
        d = x.shape[1]
        fuse = sigma_sq[:, None, :] + sigma_sq[None, :, :]
        diffs = ((x[:, None, :] - x[None, :, :]) ** 2) / fuse + torch.log(fuse)
        loss_mat = 0.5 * diffs.sum(2) + 0.5 * d * math.log(2 * math.pi)  # minus facelab's MLS score
        y = labels[i]
        positive = (y[:, None] == y[None, :]) & ~torch.eye(len(y), dtype=torch.bool)
        loss = loss_mat[positive].mean()
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()
        return {"mls_loss": loss.item()}

    settings = {"classes_per_batch": classes, "samples_per_class": samples, "batch": classes * samples,
                "feature_dim": int(feats.shape[1]), "embedding_dim": int(mu.shape[1]), "hidden": cfg.hidden,
                "data": source}
    return Case(facelab, reference, idx, settings)


def option_value(text: str) -> tuple[str, Any]:
    """``name=value`` with YAML's reading of the value (true, 3, 0.5, text)."""
    import yaml

    name, _, value = text.partition("=")
    return name, yaml.safe_load(value)


def build_case(trainer: str, precision: str, args: argparse.Namespace, units: int, options: dict | None = None) -> Case:
    """The race for ``trainer``; ``options`` (default: ``--set``) are facelab options for its side."""
    options = dict(args.set) if options is None else options
    if trainer in SWAP_RUNS:
        return swap_case(trainer, precision, args.batch_size, units, args.tiny, options)
    if trainer == "stargan":
        return stargan_case(precision, args.batch_size, args.image_size, units, args.tiny, options)
    if options:
        raise SystemExit(f"--set and --against work for the swap and StarGAN trainers, not {trainer}")
    if trainer == "xseg":
        return xseg_case(precision, args.batch_size, args.xseg_resolution, units, args.tiny)
    return pfe_case(precision, args.batch_size, units, args.tiny)


def run_one_side(trainer: str, precision: str, args: argparse.Namespace) -> None:
    """A process race's child: one side's units, its JSON as the last line. facelab's side (and with
    ``--against`` the other facelab side) sets what facelab's training loop sets for its process."""
    units = 2 + args.timed_units
    if args.side == "facelab" or args.against is not None:
        options = dict(args.set) if args.side == "facelab" else dict(args.against)
        case = build_case(trainer, precision, args, units, options)
        step = case.facelab
        from facelab.core.memory import keep_freed_memory

        keep_freed_memory()  # what core.training.step_loop does first
    else:
        case = build_case(trainer, precision, args, units)
        step = case.reference
    try:
        record = run_side(step, case.units, checked=2)
    finally:
        for done in case.cleanup:
            done()
    first, curve = case.tolerances(precision)
    record["settings"] = case.settings
    record["check"] = {"first_step": [k for k in record["losses"][0] if case.first_step(k)], "first_rtol": first,
                       "curve_rtol": curve, "judged_units": case.judged_units}
    print(json.dumps(record), flush=True)


def child_command(trainer: str, precision: str, side: str) -> list[str]:
    """This script's argv for one side of a process race of ``trainer`` at ``precision``."""
    argv, skip = [], False
    for arg in sys.argv[1:]:  # every option as given, less those the child gets one value of
        if arg.startswith("--"):
            skip = arg in ("--trainer", "--precision", "--processes")
        if not skip:
            argv.append(arg)
    return [sys.executable, str(Path(__file__).resolve()), *argv, "--trainer", trainer, "--precision", precision,
            "--side", side]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trainer", nargs="+", choices=TRAINERS, default=list(TRAINERS))
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=("fp32", "bf16"),
                    help="facelab's precision; the reference loop is always fp32")
    ap.add_argument("--pairs", type=int, default=5, help="alternated timed pairs after the two check/warm-up units "
                    "(with --processes: pairs of processes)")
    ap.add_argument("--processes", action="store_true", help="race whole processes, one side each, alternated: "
                    "each runs the two check/warm-up units and --timed-units more, with its own process settings")
    ap.add_argument("--timed-units", type=int, default=3, help="with --processes: timed units in each process")
    ap.add_argument("--side", choices=("facelab", "reference"), help=argparse.SUPPRESS)  # a process race's child
    ap.add_argument("--batch-size", type=int, default=None, help="default: each trainer's own (PFE: faces per batch)")
    ap.add_argument("--image-size", type=int, default=128, help="StarGAN image size")
    ap.add_argument("--xseg-resolution", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default, one per core)")
    ap.add_argument("--set", nargs="+", default=[], type=option_value, metavar="NAME=VALUE",
                    help="a facelab swap or StarGAN option for its side, e.g. channels_last=true (A/B of an option)")
    ap.add_argument("--against", nargs="+", default=None, type=option_value, metavar="NAME=VALUE",
                    help="swap and StarGAN trainers: race facelab with --set against facelab with these options instead of "
                    "the reference loop (an A/B of facelab's own settings, e.g. --set channels_last=true --against "
                    "channels_last=false)")
    ap.add_argument("--tiny", action="store_true", help="tiny networks and batches: checks the script and the loss "
                    "check in seconds (the test suite's mode); its times mean nothing")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.side:
        run_one_side(args.trainer[0], args.precision[0], args)
        return
    for trainer in args.trainer:
        for precision in args.precision:
            if args.processes:  # the children build the case; the first facelab one reports its settings
                result = process_race(lambda side: child_command(trainer, precision, side), args.pairs)
                settings = {**result.pop("settings"), "race": f"whole processes, {args.timed_units} timed units each"}
            else:
                case = build_case(trainer, precision, args, args.pairs + 2)
                if args.against is not None:
                    other = build_case(trainer, precision, args, args.pairs + 2, dict(args.against))
                    case.reference, case.cleanup = other.facelab, case.cleanup + other.cleanup
                first, curve = case.tolerances(precision)
                try:
                    result = race(case.facelab, case.reference, case.units, args.pairs, first_rtol=first,
                                  curve_rtol=curve, first_step=case.first_step, judged_units=case.judged_units)
                finally:
                    for done in case.cleanup:
                        done()
                settings = case.settings
            if args.against is not None:
                settings["reference_side"] = {"facelab with options": dict(args.against)}
            emit({"benchmark": "reference_loops", "trainer": trainer, "precision": precision,
                  "reference_precision": "fp32", **settings, **result, **machine(torch.device("cpu"))})


if __name__ == "__main__":
    main()
