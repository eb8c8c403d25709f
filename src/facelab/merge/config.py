"""Every merge option with its default, in one place (DeepFaceLab's merger settings, named for clarity).

The same dataclass backs the ``facelab merge`` flags, a ``--config merge.yaml`` file and the Python API.
Pixel amounts (erode, blur) are pixels of the face crop at the model's resolution, so one setting
means the same on a small face in the background and a close-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from facelab.align.face_types import FACE_TYPE_ALIASES, FACE_TYPES
from facelab.color.transfer import MODES as COLOR_MODES
from facelab.core.config import Validated, option
from facelab.core.device import DEVICE_HELP, DEVICES
from facelab.core.errors import FacelabError
from facelab.merge.masks import MASK_MODE_ALIASES, MODE_MASKS

MASK_MODES = tuple(MODE_MASKS)
BLEND_MODES = ("overlay", "hist-match", "seamless", "seamless-hist-match", "raw-rgb", "raw-predict")
SHARPEN_MODES = ("box", "gaussian")
OUTPUT_FORMATS = ("png", "jpg")
# The options that say how a face is pasted: the interactive merger tunes these frame by frame
# (merge/frame_settings.py); the others (segmenter, output, runtime) hold for the whole merge.
FRAME_OPTIONS = ("mask_mode", "erode", "blur", "motion_blur_power", "face_scale", "output_face_type", "color_transfer",
                 "blend", "hist_match_strength", "sharpen_mode", "sharpen", "denoise_power", "bicubic_degrade_power",
                 "color_degrade_power")

@dataclass
class MergeConfig(Validated):
    # `--help` topics: each starts at the named option and runs to the next topic's first option
    HELP_TOPICS: ClassVar[dict[str, str]] = {
        "mask": "mask_mode", "colour and blending": "color_transfer",
        "motion blur, sharpening and degrading": "motion_blur_power",
        "output": "provenance", "runtime": "batch_size"}

    mask_mode: str = option("hull", "which mask cuts the face: the dst landmark hull, the model's learned src/dst "
                            "masks (or their product / sum / product with the hull), the dst face's XSeg mask "
                            "(applied by `facelab xseg apply`, else its labels), the learned src mask times it, "
                            "an XSeg model run on the swapped face (segmenter-prd, needs --segmenter-dir; "
                            "DeepFaceLab's XSeg-prd), that times the dst face's XSeg mask, or the product of all four "
                            "(learned-src*dst*segmenter-prd*segmenter)", MASK_MODES,
                            value_aliases=MASK_MODE_ALIASES)
    segmenter_dir: str = option("", "XSeg model folder (made by `facelab xseg train`) that the segmenter-prd mask "
                                "modes run on the swapped face; empty = none")
    erode: int = option(0, "shrink (>0) or grow (<0) the mask by this many crop pixels", low=-200, high=200)
    blur: int = option(8, "feather the mask edge over this many crop pixels", low=0, high=200)
    face_scale: int = option(0, "make the pasted face this many percent larger (>0) or smaller (<0)", low=-50, high=50)
    output_face_type: str = option("model", "paste only the crop of this (smaller) face type; 'model' pastes the "
                                   "model's whole crop", ("model",) + FACE_TYPES,
                                   value_aliases=FACE_TYPE_ALIASES)
    color_transfer: str = option("rct", "match the swapped face's colours to the frame; -m variants take the "
                                 "statistics inside the mask only", COLOR_MODES)
    blend: str = option("overlay", "how the face goes into the frame: overlay, histogram-matched overlay, Poisson "
                        "(seamless) cloning, seamless after histogram matching, the raw square crop (raw-rgb) or "
                        "only the predicted face (raw-predict)", BLEND_MODES)
    hist_match_strength: float = option(1.0, "how far hist-match moves each channel's histogram (0 = not, 1 = fully)", low=0.0, high=1.0)
    motion_blur_power: int = option(0, "blur the swapped face along its movement, as the camera blurred the frame "
                                    "around it: the streak spans this percent of the distance the face moves from "
                                    "the previous frame to the next (DeepFaceLab's motion blur; crop pixels, at "
                                    "most a quarter of the crop; 0 = off)", low=0, high=100)
    sharpen_mode: str = option("gaussian", "unsharp-mask kernel used by --sharpen", SHARPEN_MODES)
    sharpen: int = option(0, "sharpen (>0) or blur (<0) the swapped face, -100..100", low=-100, high=100)
    super_resolution: int = option(0, "blend this many percent (0..100) of the face enhancer's restoration into the "
                                   "swapped face before its colours are matched and it is pasted (DeepFaceLab's super "
                                   "resolution power; needs --enhancer-dir)", low=0, high=100)
    enhancer_dir: str = option("", "face enhancer folder (made by `facelab enhancer train`) that --super-resolution "
                               "runs on the swapped face; empty = none")
    denoise_power: int = option(0, "median-denoise the frame around the face, 0..500 (softens a noisy background "
                                "to match the smoother face; changes pixels outside the mask)", low=0, high=500)
    bicubic_degrade_power: int = option(0, "downscale and upscale the frame around the face, 0..100 (changes pixels "
                                        "outside the mask)", low=0, high=100)
    color_degrade_power: int = option(0, "reduce the output frame to 256 colours, blended 0..100 (changes pixels "
                                      "outside the mask)", low=0, high=100)
    provenance: bool = option(True, "mark every pasted face with facelab's invisible watermark and sign every merged "
                              "frame that holds one with a C2PA manifest; --no-provenance is for research "
                              "pipelines (it prints a warning)")
    output_format: str = option("png", "merged frame format", OUTPUT_FORMATS)
    jpeg_quality: int = option(95, "JPEG quality 1..100 when --output-format jpg", low=1, high=100)
    batch_size: int = option(8, "faces per model call", low=1, high=1024)
    workers: int = option(0, "compositing processes: 0 = one per CPU core (half of them when the model runs on the CPU), "
                         "1 = composite in threads of the main process", low=0, high=256)
    device: str = option("auto", f"where the model runs: {DEVICE_HELP}", DEVICES)
    precision: str = option("fp32", "model arithmetic: fp32, or bf16 (about twice as fast on GPUs and on CPUs with "
                            "AVX512-BF16, output differs by about one 8-bit step) or fp16 (GPU only)",
                            ("fp32", "bf16", "fp16"))

    def check(self) -> None:
        """``--super-resolution`` runs a trained enhancer: without its folder there is nothing to run."""
        if self.super_resolution and not self.enhancer_dir:
            raise FacelabError(f"--super-resolution {self.super_resolution} runs a face enhancer on the swapped face; give "
                               "its folder with --enhancer-dir (train one with `facelab enhancer train --data FACES "
                               "--model-dir DIR`)")
