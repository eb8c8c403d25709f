"""Every XSeg training option in one dataclass, with help sentences a DeepFaceLab user recognises.

Resolution, face type and channel count shape the network and are ``fixed`` once a model exists; batch
size, learning rate, augmentation and intervals may change between runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from facelab.align.face_types import FACE_TYPE_ALIASES, FACE_TYPES
from facelab.core.config import Validated, option
from facelab.core.device import DEVICE_HELP, DEVICES, PRECISIONS
from facelab.core.errors import FacelabError


@dataclass
class XSegConfig(Validated):
    resolution: int = option(256, "Segmenter resolution in pixels, 64..512 in steps of 32 (faces are resized to it).",
                             fixed=True, low=64, high=512)
    face_type: str = option("whole", "Face type the segmenter works on (half, mid, full, whole, head); the labelled "
                            "and the applied facesets must be extracted with it.", FACE_TYPES, fixed=True,
                            value_aliases=FACE_TYPE_ALIASES)
    base_channels: int = option(32, "Channels of the first U-Net level (doubled at each level down, up to 8x); "
                                "more learns finer masks, slower.", fixed=True, low=1)
    batch_size: int = option(8, "Batch size: labelled faces per iteration.", low=1)
    lr: float = option(1e-3, "Learning rate of the Adam optimiser.", above=0)
    target_iter: int = option(0, "Target iteration: stop and save when the counter reaches it (0 = train until Ctrl-C).", low=0)
    random_warp: bool = option(True, "Random warp: bend face and label together by a smooth random grid, so the "
                               "segmenter generalises from few labelled faces.")
    random_flip: bool = option(True, "Random horizontal flip of face and label.")
    random_hsv_power: float = option(0.1, "Random HSV power: jitter hue/saturation/value of the faces by up to this "
                                     "much (0..0.3) so lighting and skin tones generalise.", low=0, high=0.5)
    eval_faces: int = option(2, "Labelled faces held out of training to report the segmenter's IoU on unseen faces "
                             "(a fifth of the labelled faces at most; none below 5).", low=0)
    eval_every: int = option(500, "Report the held-out IoU every N iterations (0 = only at the end).", low=0)
    preview_every: int = option(100, "Write preview.png (face | label | prediction) every N iterations.", low=1)
    save_every_minutes: float = option(25.0, "Save the model every N minutes (and always at the target iteration and on Ctrl-C).", above=0)
    save_every: int = option(0, "Also save the model every N iterations (0 = by time only).", low=0)
    log_every: int = option(10, "Write the loss to losses.csv and TensorBoard every N iterations.", low=1)
    workers: int = option(0, "Batch-producing worker processes (0 = produce batches in the training process).", low=0)
    seed: int = option(0, "Random seed: the same seed gives the same run on the CPU, resumes included.", low=0)
    device: str = option("auto", f"Device the segmenter and optimiser state live on: {DEVICE_HELP}.", DEVICES)
    precision: str = option("fp32", "Precision: fp32, bf16 (autocast) or fp16 (autocast with a loss scaler, CUDA only).",
                            PRECISIONS)

    def check(self) -> None:
        """Refuse impossible values before any network is built."""
        if self.resolution % 32:
            raise FacelabError(f"resolution {self.resolution} is not valid for XSeg; use 64..512 in steps of 32")
