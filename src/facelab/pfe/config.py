"""Typed configs of the PFE commands (one dataclass per trainable model; the CLI flags come from them)."""

from __future__ import annotations

from dataclasses import dataclass

from facelab.core.config import Validated, option
from facelab.core.device import DEVICE_HELP, DEVICES, PRECISIONS

SPHERE_DEPTHS = (20, 36, 64)


@dataclass
class BackboneConfig(Validated):
    """``facelab pfe train-backbone``: a SphereFace-style residual CNN trained with an additive-margin softmax.

    Defaults follow the reference port's CASIA-WebFace recipe (112x96 faces, batch 256, step-wise lr).
    """

    data: str = option("", "identity folder: one sub-folder of face images per person (CASIA-WebFace layout)")
    model_dir: str = option("", "where the checkpoint, config and logs go; an existing one is resumed")
    depth: int = option(64, "residual depth of the sphere network", choices=SPHERE_DEPTHS, fixed=True)
    embedding_size: int = option(512, "embedding dimension", fixed=True, low=1)
    aligned: bool = option(True, "images are already aligned 112x96 crops (as the PFE preprocessing writes); "
                                 "--no-aligned detects and aligns every image (slow)")
    batch_size: int = option(256, "faces per step", low=1)
    target_iter: int = option(28000, "training steps", low=0, aliases=("steps",))
    lr: float = option(0.1, "initial SGD learning rate", above=0)
    lr_steps: list[int] = option([16000, 24000], "steps at which the learning rate drops tenfold", low=0)
    weight_decay: float = option(5e-4, "SGD weight decay", low=0)
    margin: float = option(0.35, "additive cosine margin m of the AM-softmax", low=0, high=1)
    scale: float = option(30.0, "logit scale s of the AM-softmax", above=0)
    workers: int = option(2, "image-loading worker processes", low=0)
    save_every: int = option(1000, "steps between checkpoints", low=1)
    log_every: int = option(20, "steps between log rows", low=1)
    seed: int = option(0, "random seed", low=0)
    device: str = option("auto", f"compute device: {DEVICE_HELP}", choices=DEVICES)
    precision: str = option("fp32", "autocast precision", choices=PRECISIONS)


@dataclass
class PFEConfig(Validated):
    """``facelab pfe train``: the uncertainty module on a frozen backbone, trained with the MLS loss.

    Training draws identity-balanced batches (classes x samples per class, as in the paper's config)
    from a pool of backbone features computed once: ``copies`` augmented versions of every image, a
    ``degrade_prob`` share of them blurred or shrunk so the module sees faces whose embeddings scatter.
    """

    data: str = option("", "identity folder: one sub-folder of face images per person")
    model_dir: str = option("", "where the checkpoint, config and logs go; an existing one is resumed")
    backbone: str = option("dlib", "'dlib' (offline pretrained, 128-d) or a 'facelab pfe train-backbone' model dir",
                           fixed=True)
    hidden: int = option(256, "width of the uncertainty module's hidden layer", fixed=True, low=1)
    aligned: bool = option(False, "images are already aligned face crops: skip detection, fit landmarks in the whole image")
    copies: int = option(1, "augmented copies of every image in the feature pool", low=1)
    degrade_prob: float = option(0.3, "share of augmented copies that are blurred or shrunk", low=0, high=1)
    max_per_class: int = option(0, "use at most this many images per identity (0: all)", low=0)
    workers: int = option(0, "processes that find and encode the faces of the feature pool on a CPU backbone "
                             "(0: one per CPU core); the pool is the same for any number", low=0)
    classes_per_batch: int = option(64, "identities in a batch", low=1)
    samples_per_class: int = option(4, "faces of each identity in a batch", low=2)
    target_iter: int = option(3000, "training steps", low=0, aliases=("steps",))
    lr: float = option(1e-3, "Adam learning rate", above=0)
    lr_steps: list[int] = option([2000], "steps at which the learning rate drops tenfold (PFE: 2000 of 3000)", low=0)
    weight_decay: float = option(5e-4, "weight decay of the uncertainty module", low=0)
    save_every: int = option(500, "steps between checkpoints", low=1)
    log_every: int = option(10, "steps between log rows", low=1)
    seed: int = option(0, "random seed", low=0)
    device: str = option("auto", f"compute device: {DEVICE_HELP}", choices=DEVICES)
    precision: str = option("fp32", "autocast precision", choices=PRECISIONS)
