"""Every face enhancer training option in one dataclass.

Face size, channels and residual blocks shape the network and are ``fixed`` once a model exists; batch,
patch size, learning rate, the held-out split and the intervals may change between runs (a changed
``eval_people`` or ``seed`` holds out other people, so the figures of the two runs no longer compare).
"""

from __future__ import annotations

from dataclasses import dataclass

from facelab.core.config import Validated, option
from facelab.core.device import DEVICE_HELP, DEVICES, PRECISIONS
from facelab.core.errors import FacelabError
from facelab.enhance.network import FOLD


@dataclass
class EnhancerConfig(Validated):
    size: int = option(128, "Face size in pixels the enhancer restores (training faces are scaled to it; faces of "
                       "another size are scaled to it and only the correction is scaled back).", fixed=True,
                       low=16, high=1024)
    channels: int = option(32, "Channels of the residual blocks; more restores finer detail, slower.", fixed=True, low=4)
    blocks: int = option(4, "Residual blocks; more reach and capacity, slower.", fixed=True, low=1, high=64)
    patch_size: int = option(48, "Training patch in pixels, cut from the degraded and the sharp face at one place "
                             "(the network is convolutional: smaller patches are cheaper steps of the same task).",
                             low=16)
    batch_size: int = option(16, "Patches per iteration.", low=1)
    lr: float = option(5e-4, "Learning rate of the Adam optimiser.", above=0)
    target_iter: int = option(0, "Target iteration: stop and save when the counter reaches it (0 = train until Ctrl-C).",
                              low=0)
    eval_people: int = option(20, "People of each data folder held out of training (all their faces) for the "
                              "held-out PSNR/SSIM; a folder of one person holds out nobody.", low=0)
    eval_faces: int = option(96, "Held-out faces the periodic evaluation scores (spread over the held-out people; "
                             "`facelab enhancer eval` scores them all).", low=1)
    eval_every: int = option(1000, "Report held-out PSNR/SSIM against bicubic every N iterations (0 = only at the end).",
                             low=0)
    preview_every: int = option(500, "Write preview.png (low-res | bicubic | enhanced | original) every N iterations.",
                                low=1)
    save_every_minutes: float = option(10.0, "Save every N minutes (and always at the target iteration and on Ctrl-C).",
                                       above=0)
    save_every: int = option(0, "Also save every N iterations (0 = by time only).", low=0)
    log_every: int = option(50, "Write the loss to losses.csv and TensorBoard every N iterations.", low=1)
    workers: int = option(0, "Batch-producing worker processes (0 = produce batches in the training process).", low=0)
    seed: int = option(0, "Random seed: the same seed gives the same run on the CPU, resumes included, and holds out "
                       "the same people.", low=0)
    device: str = option("auto", f"Device the enhancer and optimiser state live on: {DEVICE_HELP}.", DEVICES)
    precision: str = option("fp32", "Precision: fp32, bf16 (autocast) or fp16 (autocast with a loss scaler, CUDA only).",
                            PRECISIONS)

    def check(self) -> None:
        """The network folds 4x4 pixel blocks into channels, so sizes must be multiples of 4; a patch is a
        part of one face."""
        for name, value in (("size", self.size), ("patch_size", self.patch_size)):
            if value % FOLD:
                raise FacelabError(f"{name} {value} is not a multiple of {FOLD}; use e.g. {value - value % FOLD or FOLD}")
        if self.patch_size > self.size:
            raise FacelabError(f"patch_size {self.patch_size} is larger than the face size {self.size}; "
                               f"use --patch-size {self.size} or less")
