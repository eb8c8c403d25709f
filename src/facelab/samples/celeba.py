"""A tiny CelebA-layout folder made from real photos, for tests, demos and the speed benchmark.

CelebA itself cannot ship with the package. :func:`make_sample_celeba` writes ``count`` 178x218 JPEGs
(random crops, flips, colour jitter) and a ``list_attr_celeba.txt`` with CelebA's 40 attribute names.
Two sources:

* the two bundled portraits (:func:`facelab.samples.clips.sample_photos`), offline: two people cannot
  span the hair-colour domains, so each image gets a hair tint and its hair label follows the tint
  actually painted;
* ``fetched=True``: the 14 people of :func:`facelab.samples.photos.people_photos` plus the bundled two, with
  their own hair colour, sex and age labelled by hand from the photos (:data:`FETCHED_ATTRS`), no tint:
  real faces with real labels, as in CelebA (whose labels are hand-made too, and as debatable for dark
  brown hair).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facelab.core.config import check_range
from facelab.core.files import atomic_write_text
from facelab.io.images import write_image
from facelab.stargan.split import IDENTITY_FILE

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
# Hand labels of the people of facelab.samples.photos (as seen in those photos) and of the bundled two.
FETCHED_ATTRS = {
    "astronaut": {"Brown_Hair", "Young", "Smiling", "No_Beard", "Wearing_Lipstick"},
    "hopper": {"Gray_Hair", "No_Beard", "Wearing_Necktie", "Wearing_Hat", "Eyeglasses"},
    "obama": {"Black_Hair", "Male", "No_Beard", "Wearing_Necktie"},
    "biden": {"Gray_Hair", "Male", "No_Beard", "Wearing_Necktie"},
    "group5_cast_0": {"Black_Hair", "Male", "Young", "No_Beard"},
    "group5_cast_1": {"Brown_Hair", "Male", "Young", "Eyeglasses", "Goatee", "Mustache"},
    "middleditch": {"Brown_Hair", "Male", "Young", "No_Beard"},
    "group5_cast_3": {"Brown_Hair", "Male", "Young", "No_Beard"},
    "group5_cast_4": {"Brown_Hair", "Male", "Young", "Goatee", "Mustache", "Wavy_Hair"},
    "group2_pair_0": {"Brown_Hair", "Young", "No_Beard", "Wavy_Hair", "Heavy_Makeup"},
    "group6_table_0": {"Blond_Hair", "Young", "No_Beard", "Straight_Hair", "Heavy_Makeup"},
    "group6_table_1": {"Black_Hair", "Young", "No_Beard", "Heavy_Makeup", "Wearing_Lipstick"},
    "group6_table_2": {"Black_Hair", "Male", "Young", "No_Beard", "Smiling"},
    "group6_table_3": {"Brown_Hair", "Male", "Young", "No_Beard", "Smiling"},
    "group6_table_4": {"Black_Hair", "Male", "Young", "No_Beard"},
    "group6_table_5": {"Blond_Hair", "Young", "No_Beard", "Smiling", "Wearing_Lipstick"},
}


def _augment(photo: np.ndarray, tint: tuple[int, int, int] | None, rng: np.random.Generator) -> np.ndarray:
    h, w = photo.shape[:2]
    crop_h = int(min(h, w * HEIGHT / WIDTH) * rng.uniform(0.8, 1.0))
    crop_w = int(crop_h * WIDTH / HEIGHT)
    top = int(rng.integers(0, h - crop_h + 1))
    left = int(rng.integers(0, w - crop_w + 1))
    img = cv2.resize(photo[top : top + crop_h, left : left + crop_w], (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = img.astype(np.float32)
    if tint is not None:  # hair tint: blend the top third towards the hair colour, fading out downwards
        fade = np.clip(1.0 - np.arange(HEIGHT) / (0.35 * HEIGHT), 0, 1)[:, None, None] * rng.uniform(0.5, 0.7)
        img = img * (1 - fade) + np.asarray(tint, np.float32) * fade
    # Colour jitter: brightness, contrast, per-channel gain.
    img = (img - 128) * rng.uniform(0.85, 1.15) + 128 + rng.uniform(-15, 15)
    img = img * rng.uniform(0.92, 1.08, size=3)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def make_sample_celeba(out_dir: str | Path, count: int = 48, seed: int = 0,
                       fetched: bool = False) -> tuple[Path, Path]:
    """Write ``out_dir/images/NNNNNN.jpg``, ``list_attr_celeba.txt`` and ``identity_CelebA.txt`` (one
    identity per source person, so the identity split holds out whole people as on CelebA); return
    (image root, attr file).

    Reuses a folder already made with the same ``count`` and source.
    """
    check_range(count, "count", "stargan sample-data", low=1)
    check_range(seed, "seed", "stargan sample-data", low=0)
    out_dir = Path(out_dir)
    root, attr_path = out_dir / "images", out_dir / "list_attr_celeba.txt"
    source = "fetched" if fetched else "bundled"
    stamp = out_dir / "source.txt"
    if attr_path.is_file() and attr_path.read_text().split("\n", 1)[0].strip() == str(count) \
            and stamp.is_file() and stamp.read_text().strip() == source and (out_dir / IDENTITY_FILE).is_file():
        return root, attr_path
    from facelab.samples.clips import sample_photos

    bundled = sample_photos()
    if fetched:
        from facelab.samples.photos import people_photos

        people = {**{k: [v] for k, v in bundled.items()}, **people_photos()}
        # one entry per photo, each with its person's labels and no tint
        sources = [(who, photo, FETCHED_ATTRS[who], None) for who, photos in people.items() for photo in photos]
    else:
        sources = [(who, bundled[who], (PHOTO_ATTRS[who] - {"Gray_Hair"}) | {hair}, HAIR_TINTS[hair])
                   for hair in HAIR_TINTS for who in bundled]
    person_ids = {who: str(k + 1) for k, who in enumerate(dict.fromkeys(s[0] for s in sources))}
    rng = np.random.default_rng(seed)
    lines, identities = [str(count), " ".join(CELEBA_ATTRS)], []
    for i in range(count):
        who, photo, on, tint = sources[i % len(sources)]
        name = f"{i + 1:06d}.jpg"
        write_image(root / name, _augment(photo, tint, rng))
        lines.append(name + " " + " ".join("1" if a in on else "-1" for a in CELEBA_ATTRS))
        identities.append(f"{name} {person_ids[who]}\n")
    atomic_write_text(attr_path, "\n".join(lines) + "\n")
    atomic_write_text(out_dir / IDENTITY_FILE, "".join(identities))
    atomic_write_text(stamp, source + "\n")
    return root, attr_path
