"""Every face-swap training option in one dataclass, with the help sentences DeepFaceLab users know.

Options marked ``fixed`` shape the network and are refused if they change once a model exists; all others
(batch size, GAN power, random warp, ...) may change between runs, exactly as in DeepFaceLab's
"override settings" prompt. ``quick96`` and ``original`` are presets that pin their network options.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from facelab.align.face_types import FACE_TYPE_ALIASES, FACE_TYPES
from facelab.core.config import Validated, option
from facelab.core.device import DEVICE_HELP, DEVICES, PRECISIONS
from facelab.core.errors import FacelabError

MODELS = ("original", "saehd", "quick96")
CT_MODES = ("none", "rct", "lct", "mkl", "idt", "sot")
LOSSES = ("dssim+mse", "mse")


@dataclass
class SwapConfig(Validated):
    # `--help` topics: each starts at the named option and runs to the next topic's first option
    HELP_TOPICS: ClassVar[dict[str, str]] = {
        "network (fixed once the model exists)": "model", "training": "batch_size", "augmentation": "random_warp",
        "loss, learning rate, GAN and style": "loss", "optimiser": "clipgrad", "pretraining": "pretrain",
        "saving, previews and reports": "autobackup_hours", "runtime": "workers"}

    model: str = option("saehd", "Model family: original (classic 64 px), saehd (configurable) or quick96 (zero-configuration preset).",
                        MODELS, fixed=True)
    resolution: int = option(128, "Face resolution in pixels, 64..640 in steps of 16 (32 for -d architectures); higher is sharper and slower.",
                             fixed=True, low=16, high=1024)
    face_type: str = option("whole", "Face type the model is trained on (half, mid, full, whole, head); facesets of a wider face type (whole for full) are cropped as they load.",
                            FACE_TYPES, fixed=True, value_aliases=FACE_TYPE_ALIASES)
    archi: str = option("liae-ud", "Architecture: df (better likeness, needs similar faces) or liae (better colour/shape of dst), "
                        "with -u (pixel-normalised, better likeness), -d (double resolution at the same cost), "
                        "-t (more layers, better likeness), e.g. df-ud, liae-udt.", fixed=True)
    ae_dims: int = option(256, "AutoEncoder dimensions: the size of the bottleneck code; more holds more facial detail.", fixed=True, low=1)
    e_dims: int = option(64, "Encoder dimensions: base channel count of the encoder.", fixed=True, low=1)
    d_dims: int = option(64, "Decoder dimensions: base channel count of the decoder.", fixed=True, low=1)
    d_mask_dims: int = option(22, "Decoder mask dimensions: base channel count of the mask decoder.", fixed=True, low=1)

    batch_size: int = option(8, "Batch size: faces per iteration; bigger generalises better but needs more memory.", low=1)
    target_iter: int = option(0, "Target iteration: stop and save when the counter reaches it (0 = train until Ctrl-C).", low=0)
    masked_training: bool = option(True, "Masked training: train only inside the face mask (whole and head faces); off learns the background too.")
    eyes_mouth_prio: bool = option(False, "Eyes and mouth priority: weight errors around eyes and mouth higher, for sharper teeth and gaze.")
    uniform_yaw: bool = option(False, "Uniform yaw distribution: sample side faces as often as frontal ones (helps profiles in small facesets).")
    blur_out_mask: bool = option(False, "Blur out mask: blur the background just outside the face mask so the model ignores it.")
    random_warp: bool = option(True, "Random warp of samples: generalises the model; turn off late in training to sharpen details.")
    random_hsv_power: float = option(0.0, "Random HSV power: jitter hue/saturation/value of inputs by this much (0..0.3) so colours generalise.", low=0, high=1)
    random_src_flip: bool = option(False, "Random flip of src faces: more angles from a small src faceset, at some cost to likeness.")
    random_dst_flip: bool = option(True, "Random flip of dst faces: more dst angles for the src->dst generalisation.")
    loss: str = option("dssim+mse", "Reconstruction loss: dssim+mse (SAEHD's structural similarity plus pixel error) or "
                       "mse (the pixel error alone: a little faster per step, softer detail; the classic autoencoder "
                       "loss). The mask loss is MSE either way.", LOSSES)
    lr_dropout: str = option("off", "Learning-rate dropout: on speeds up sharpening late in training; cpu builds the dropout mask on the CPU.",
                             ("off", "on", "cpu"))
    gan_power: float = option(0.0, "GAN power: train with a patch discriminator for finer detail (0 = off, 0.1 is a good start, after the model is trained).", low=0, high=10)
    gan_patch_size: int = option(0, "GAN patch size: receptive field of the patch discriminator (0 = resolution / 8).", low=0)
    gan_dims: int = option(16, "GAN dimensions: base channel count of the patch discriminator.", low=1)
    true_face_power: float = option(0.0, "True face power: a code discriminator pulls the swap towards the src likeness (df only, 0..1, try 0.01).", low=0, high=1)
    face_style_power: float = option(0.0, "Face style power: learn the colour of the dst face inside the mask (0..100, try 0.001).", low=0, high=100)
    bg_style_power: float = option(0.0, "Background style power: learn the area outside the dst face mask (0..100, try 0.001).", low=0, high=100)
    ct_mode: str = option("none", "Colour transfer for src samples: match src colours to a random dst face (rct, lct, mkl, idt, sot).", CT_MODES)
    clipgrad: bool = option(False, "Gradient clipping: clip the gradient norm to 1 to reduce the chance of a model collapse.")
    optimizer: str = option("adabelief", "Optimiser: adabelief (DeepFaceLab's default, faster, better generalisation) or adam.",
                            ("adabelief", "adam"))
    lr: float = option(5e-5, "Learning rate of the generator and the discriminators.", above=0)
    encoder_lr_factor: float = option(1.0, "Encoder learning-rate factor: the encoder and its dense inter layers, "
                                      "which both faces share, learn at lr times this, the decoders at lr (below 1 "
                                      "keeps a pretrained encoder steady while the decoders adapt; 0 freezes it).",
                                      low=0, high=100)
    pretrain: bool = option(False, "Pretrain mode: train on --pretrain-faceset for both sides; switching it off resets the iteration counter.")
    pretrain_faceset: str = option("", "Faceset folder used for pretraining (any faces of the model's face type).")
    start_from: str = option("", "A trained (e.g. pretrained) model dir to start a NEW model from: its weights, the counter at 0; "
                             "its network options must be this model's (DeepFaceLab's reuse of a pretrained model).")
    autobackup_hours: float = option(0.0, "Autobackup every N hours into model_dir/autobackups, keeping the last 15 (0 = off).", low=0)
    write_preview_history: bool = option(False, "Write preview history: keep a preview image per preview interval in preview_history/.")
    preview_every: int = option(100, "Write preview.png every N iterations.", low=1)
    save_every_minutes: float = option(25.0, "Save the model every N minutes (and always at the target iteration and on Ctrl-C).", above=0)
    save_every: int = option(0, "Also save the model every N iterations (0 = by time only), e.g. to compare saves "
                             "of a run at fixed points.", low=0)
    eval_every: int = option(500, "Report held-out SSIM (mean +- std) every N iterations (0 = only at the end).", low=0)
    eval_faces: int = option(16, "Faces per side held out from training for the SSIM quality report.", low=0)
    log_every: int = option(10, "Write losses to losses.csv and TensorBoard every N iterations.", low=1)
    workers: int = option(2, "Batch-producing worker processes (0 = produce batches in the training process).", low=0)
    seed: int = option(0, "Random seed: the same seed gives the same run on the CPU, resumes included.", low=0)
    device: str = option("auto", f"Device the networks and optimiser state live on: {DEVICE_HELP}.", DEVICES)
    precision: str = option("fp32", "Precision: fp32, bf16 (autocast) or fp16 (autocast with a loss scaler, CUDA only).", PRECISIONS)
    channels_last: bool | None = option(None, "Use channels_last memory format (--no-channels-last: NCHW); by default "
                                        "where it is faster: on GPUs and AVX512 CPUs (SAEHD and Quick96 train 1.2-1.35x "
                                        "faster so there), not on AVX2-only CPUs (1.13-1.22x slower).")
    compile: bool = option(False, "Compile the model with torch.compile (slower start, faster steps).")

    def check(self) -> None:
        """Refuse impossible combinations before any network is built."""
        kind, opts = parse_archi(self.archi)
        step = 32 if "d" in opts else 16
        if self.model == "saehd" and not (64 <= self.resolution <= 640 and self.resolution % step == 0):
            raise FacelabError(f"resolution {self.resolution} is not valid for {self.archi}; use 64..640 in steps of {step}")
        if self.true_face_power > 0 and kind != "df":
            raise FacelabError("true_face_power works only with df architectures (liae has no separate src code); set it to 0")
        if self.pretrain and not self.pretrain_faceset:
            raise FacelabError("pretrain mode needs --pretrain-faceset FOLDER (any faceset of the model's face type)")


ARCHI_TYPES = ("df", "liae")
ARCHI_OPTS = "udt"

# Presets pin the network so the user only points at two facesets (DeepFaceLab's Quick96 / Original).
PRESETS = {
    "quick96": dict(resolution=96, face_type="full", archi="df-ud", ae_dims=128, e_dims=64, d_dims=64, d_mask_dims=16,
                    batch_size=4),
    "original": dict(resolution=64, face_type="full", archi="df", ae_dims=1024, e_dims=128, d_dims=64, d_mask_dims=16),
}


# What `facelab swap` trains when no network is chosen (issue 20, measured in docs/training.md): on a CPU a
# small 64 px LIAE-UD; on the real clips and 2 cores it trained at ~5 it/s, carried the src identity on 75 %
# of held-out swaps at 3000 iterations (10 min) and on all of them from 5000, and 9000 (31 min) gave soft but
# featured merged faces (Quick96 is still a blob after an hour). On a GPU the SAEHD defaults, 20000 iterations.
CPU_SWAP = dict(model="saehd", resolution=64, face_type="whole", archi="liae-ud", ae_dims=64, e_dims=16, d_dims=16,
                d_mask_dims=8, batch_size=8, lr=5e-4, target_iter=9000)
GPU_SWAP = dict(model="saehd", target_iter=20000)


def swap_default(device: str = "auto") -> SwapConfig:
    """The new-model config of `facelab swap` on ``device`` (``auto``: a GPU when there is one)."""
    from facelab.core.device import resolve_device

    return SwapConfig(device=device, **(CPU_SWAP if resolve_device(device).type == "cpu" else GPU_SWAP))


def parse_archi(archi: str) -> tuple[str, str]:
    """``liae-udt`` -> ``("liae", "udt")``, refusing unknown types or options with one line."""
    kind, _, opts = archi.partition("-")
    if kind not in ARCHI_TYPES or any(c not in ARCHI_OPTS for c in opts) or len(set(opts)) != len(opts):
        raise FacelabError(f"archi {archi!r} is not valid; use df or liae with any of -u -d -t, e.g. df-ud or liae-udt")
    return kind, opts


def apply_preset(cfg: SwapConfig, given: set[str] = frozenset()) -> SwapConfig:
    """Pin a preset's network options; a preset's batch size is only a default the user may override."""
    preset = dict(PRESETS.get(cfg.model, {}))
    if "batch_size" in given:
        preset.pop("batch_size", None)
    for name, value in preset.items():
        if name in given and name != "batch_size" and getattr(cfg, name) != value:
            raise FacelabError(f"{cfg.model} is a fixed preset: {name} is {value!r} there; use --model saehd to choose {name}")
    return dataclasses.replace(cfg, **preset)
