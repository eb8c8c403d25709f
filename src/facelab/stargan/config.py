"""Typed options for ``facelab stargan train``; defaults are those of the reference TensorFlow/Ascend port.

Options marked ``fixed`` shape the networks or the label vector, so a resumed run may not change them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

from facelab.core.config import Validated, option
from facelab.core.device import DEVICE_HELP, DEVICES, PRECISIONS
from facelab.core.errors import FacelabError
from facelab.detect.registry import DETECTORS, LANDMARKERS, choices_help

DEFAULT_ATTRS = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]
HAIR_COLOURS = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")
TEST_SPLITS = ("auto", "identities", "lines")


@dataclasses.dataclass
class StarGANConfig(Validated):
    # `--help` topics: each starts at the named option and runs to the next topic's first option
    HELP_TOPICS: ClassVar[dict[str, str]] = {
        "data and test split": "image_root", "networks (fixed once the run exists)": "g_conv_dim",
        "losses": "lambda_cls", "optimisation": "batch_size", "run folder, logs and samples": "model_dir",
        "runtime": "device"}
    # data
    image_root: Path = option(Path("data/celeba/images"), "folder holding the CelebA images")
    attr_path: Path = option(Path("data/celeba/list_attr_celeba.txt"), "CelebA attribute file (metadata path)",
                             spellings=("metadata_path",))
    selected_attrs: list[str] = option(list(DEFAULT_ATTRS), "attributes used as domains", fixed=True)
    c_dim: int = option(5, "number of domains; must equal the number of selected attributes", fixed=True, low=1)
    identity_path: Path | None = option(None, "CelebA identity file (identity_CelebA.txt: NAME IDENTITY per line); "
                                              "default: identity_CelebA.txt beside --attr-path, when it is there")
    test_split: str = option("auto", "how the test split is chosen: 'identities' holds out whole people (the first "
                                     "--test-identities identities of the attribute file, all their images), 'lines' "
                                     "takes the first --test-count lines; 'auto': identities when the identity file "
                                     "is there", choices=TEST_SPLITS)
    test_identities: int = option(32, "people held out as the test split (--test-split identities)", low=0)
    test_count: int = option(2000, "the first N lines of the attribute file form the test split (--test-split lines)",
                             low=0)
    train_identities: int = option(0, "train on only the first N people of the training split (0: all); for quick "
                                      "trials and overfitting checks; needs the identity file", low=0)
    crop_size: int = option(178, "centre crop (pixels) before resizing", fixed=True, low=1)
    image_size: int = option(128, "image size the networks work at", fixed=True, low=8)
    workers: int = option(2, "data-loading worker processes (0 = load in the training process)", low=0,
                          aliases=("num_workers",))
    # model
    g_conv_dim: int = option(64, "generator channels in its first layer", fixed=True, low=1)
    d_conv_dim: int = option(64, "discriminator channels in its first layer", fixed=True, low=1)
    g_repeat_num: int = option(6, "generator residual blocks", fixed=True, low=0)
    d_repeat_num: int = option(6, "discriminator stride-2 convolutions", fixed=True, low=1)
    # losses
    lambda_cls: float = option(1.0, "weight of the domain-classification loss", low=0)
    lambda_rec: float = option(10.0, "weight of the cycle-reconstruction loss", low=0)
    lambda_gp: float = option(10.0, "weight of the WGAN-GP gradient penalty", low=0)
    # optimisation
    batch_size: int = option(16, "images per step", low=1)
    target_iter: int = option(200000, "training iterations (discriminator steps)", low=1,
                              aliases=("num_iters",), spellings=("training_iterations",))
    num_iters_decay: int = option(100000, "the learning rates fall linearly to 0 over the last N iterations", low=0)
    lr_update_step: int = option(1000, "recompute the decayed learning rates every N iterations", low=1)
    g_lr: float = option(1e-4, "generator learning rate", above=0)
    d_lr: float = option(1e-4, "discriminator learning rate", above=0)
    beta1: float = option(0.5, "Adam beta1", low=0, high=1)
    beta2: float = option(0.999, "Adam beta2", low=0, high=1)
    d_train_repeat: int = option(5, "discriminator steps per generator step (n_critic)", low=1)
    # run
    model_dir: Path = option(Path("workspace/stargan"), "run folder: checkpoints, samples, logs, config",
                              aliases=("output_dir",))
    log_every: int = option(10, "log the losses every N iterations", low=1, aliases=("summary_steps",))
    preview_every: int = option(1000, "write a sample grid every N iterations", low=1, aliases=("save_steps",))
    save_every: int = option(10000, "save a resumable checkpoint every N iterations", low=1, aliases=("checkpoint_steps",))
    fid_every: int = option(10000, "log FID (offline dlib-resnet128 features) of test-split translations every N "
                                   "iterations and at the end, in logs/fid.csv (0 = never)", low=0,
                             aliases=("fid_steps",))
    fid_images: int = option(500, "test images translated for the logged FID", low=2)
    seed: int = option(1234, "random seed (data order, flips, target labels, initial weights)", low=0)
    device: str = option("auto", f"where to train: {DEVICE_HELP}", choices=DEVICES)
    precision: str = option("fp32", "autocast precision (fp16 uses a loss scaler; CUDA only)", choices=PRECISIONS)
    channels_last: bool | None = option(None, "run the generator in channels_last memory format (--no-channels-last: "
                                              "NCHW); by default the swap models' rule (channels_last on GPUs and "
                                              "AVX512 CPUs, NCHW on AVX2-only CPUs) and NCHW under bf16 on a CPU")

    def check(self) -> None:
        if self.c_dim != len(self.selected_attrs):
            raise FacelabError(f"--c-dim {self.c_dim} does not match the {len(self.selected_attrs)} --selected-attrs "
                               f"({' '.join(self.selected_attrs)}); make them agree")
        if self.image_size % 2**self.d_repeat_num:
            raise FacelabError(f"--image-size {self.image_size} must be divisible by 2**d_repeat_num = {2**self.d_repeat_num}")


@dataclasses.dataclass
class EditConfig(Validated):
    """Options of ``facelab stargan edit``: how faces are found in a photo and pasted back."""

    detector: str = option("hog", "face detector: " + choices_help(DETECTORS), choices=tuple(DETECTORS))
    detector_weights: str | None = option(None, "weights file for a detector that needs one (s3fd)")
    landmarker: str = option("dlib68", "68-point landmarker: " + choices_help(LANDMARKERS), choices=tuple(LANDMARKERS))
    landmarker_weights: str | None = option(None, "weights file for a landmarker that needs one (fan)")
    min_face_size: int = option(40, "ignore faces smaller than this many pixels (detector box side)", low=1)
    feather: float = option(0.08, "width of the soft edge of the pasted square, as a fraction of its side",
                            above=0, high=0.5)
    device: str = option("auto", f"where to run the networks: {DEVICE_HELP}", choices=DEVICES)
    provenance: bool = option(True, "mark the edited region with facelab's invisible watermark and sign each edited "
                                    "photo with a C2PA manifest; --no-provenance is for research pipelines (it "
                                    "prints a warning)")
