"""A tiny CelebA-layout folder made from real portraits, for tests, demos and the speed benchmark.

CelebA itself cannot ship with the package. :func:`make_sample_celeba` takes real face photos (by default
the two portraits of :func:`facelab.io.samples.sample_photos`) and writes ``count`` 178x218 JPEGs with
random crops, flips, colour jitter and a hair tint, plus a ``list_attr_celeba.txt`` with CelebA's 40
attribute names. The hair-colour labels follow the tint actually painted, so a classifier has something
real to learn; the other labels are fixed per source photo.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facelab.core.files import atomic_write_text
from facelab.io.images import write_image

CELEBA_ATTRS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
HAIR_TINTS = {"Black_Hair": (20, 20, 25), "Blond_Hair": (120, 200, 235), "Brown_Hair": (30, 60, 110)}  # BGR
WIDTH, HEIGHT = 178, 218
# Labels of the two bundled portraits (astronaut Eileen Collins, Grace Hopper), other than hair colour.
PHOTO_ATTRS = {"astronaut": {"Smiling", "Young", "No_Beard", "Wearing_Lipstick"},
               "hopper": {"No_Beard", "Gray_Hair", "Wearing_Necktie", "Wearing_Hat", "Eyeglasses"}}


def _augment(photo: np.ndarray, tint: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = photo.shape[:2]
    crop_h = int(min(h, w * HEIGHT / WIDTH) * rng.uniform(0.8, 1.0))
    crop_w = int(crop_h * WIDTH / HEIGHT)
    top = int(rng.integers(0, h - crop_h + 1))
    left = int(rng.integers(0, w - crop_w + 1))
    img = cv2.resize(photo[top : top + crop_h, left : left + crop_w], (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    # Hair tint: blend the top third towards the hair colour, fading out downwards.
    fade = np.clip(1.0 - np.arange(HEIGHT) / (0.35 * HEIGHT), 0, 1)[:, None, None] * rng.uniform(0.5, 0.7)
    img = img.astype(np.float32) * (1 - fade) + np.asarray(tint, np.float32) * fade
    # Colour jitter: brightness, contrast, per-channel gain.
    img = (img - 128) * rng.uniform(0.85, 1.15) + 128 + rng.uniform(-15, 15)
    img = img * rng.uniform(0.92, 1.08, size=3)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def make_sample_celeba(out_dir: str | Path, count: int = 48, seed: int = 0,
                       photos: dict[str, np.ndarray] | None = None) -> tuple[Path, Path]:
    """Write ``out_dir/images/NNNNNN.jpg`` and ``out_dir/list_attr_celeba.txt``; return (image root, attr file).

    Reuses a folder already made with the same ``count``.
    """
    out_dir = Path(out_dir)
    root, attr_path = out_dir / "images", out_dir / "list_attr_celeba.txt"
    if attr_path.is_file() and attr_path.read_text().split("\n", 1)[0].strip() == str(count):
        return root, attr_path
    if photos is None:
        from facelab.io.samples import sample_photos

        photos = sample_photos()
    rng = np.random.default_rng(seed)
    names, tints = list(photos), list(HAIR_TINTS)
    lines = [str(count), " ".join(CELEBA_ATTRS)]
    for i in range(count):
        who, hair = names[i % len(names)], tints[(i // len(names)) % len(tints)]
        name = f"{i + 1:06d}.jpg"
        write_image(root / name, _augment(photos[who], HAIR_TINTS[hair], rng))
        on = (PHOTO_ATTRS.get(who, set()) - {"Gray_Hair"}) | {hair}
        lines.append(name + " " + " ".join("1" if a in on else "-1" for a in CELEBA_ATTRS))
    atomic_write_text(attr_path, "\n".join(lines) + "\n")
    return root, attr_path
