"""``facelab stargan edit``: change attributes of the faces in any photo and paste them back.

Each face is found (detector + 68 landmarks), cut out aligned like CelebA's centre crop at the
generator's size (:mod:`facelab.stargan.align`), and its current attributes are read by the critic's
domain classifier (the photo has no labels; the classifier was trained to give them). The target is that
reading with the user's ``--set NAME=0|1`` applied; choosing a hair colour clears the other hair colours,
as in training, where they form one exclusive group.

What goes back into the photo is the *change* the generator makes, ``G(face, target) - G(face, current)``,
warped back to the photo and added under a feathered square: the photo keeps its own resolution and
everything the generator cannot reproduce (at 128 px it blurs), and a face whose target equals its reading
is left as it was. The edit touches no pixel outside the pasted squares; the provenance mark then covers the
whole photo (:mod:`facelab.provenance.stamp`), unless ``--no-provenance``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from facelab.align.transform import warp_to_face, warp_to_image
from facelab.core.device import resolve_device
from facelab.core.errors import FacelabError
from facelab.core.progress import progress
from facelab.detect.base import Detector, Landmarker
from facelab.detect.registry import make_detector, make_landmarker
from facelab.io.images import is_image_file, list_images, read_image, write_image
from facelab.provenance.signing import Credentials
from facelab.provenance.stamp import Stamp, model_sha256
from facelab.stargan.align import crop_matrix
from facelab.stargan.checkpoint import load_models
from facelab.stargan.config import HAIR_COLOURS, EditConfig
from facelab.stargan.data import preprocess
from facelab.stargan.models import Discriminator, Generator

log = logging.getLogger("facelab")


def parse_settings(items: Sequence[str], attrs: Sequence[str]) -> dict[str, float]:
    """``["Blond_Hair=1", "Male=0"]`` -> ``{"Blond_Hair": 1.0, "Male": 0.0}``, checked against the model's domains."""
    settings: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or value.strip() not in ("0", "1"):
            raise FacelabError(f"--set {item!r}: write NAME=1 or NAME=0, e.g. --set Blond_Hair=1")
        if name not in attrs:
            raise FacelabError(f"--set {item!r}: the model has no attribute {name!r}; it edits {', '.join(attrs)}")
        settings[name] = float(value)
    chosen = [a for a, v in settings.items() if v == 1 and a in HAIR_COLOURS]
    if len(chosen) > 1:
        raise FacelabError(f"--set gives two hair colours ({', '.join(chosen)}); hair colours are exclusive: choose one")
    if not settings:
        raise FacelabError("nothing to change: give at least one --set NAME=0|1")
    return settings


def apply_settings(current: torch.Tensor, attrs: Sequence[str], settings: dict[str, float]) -> torch.Tensor:
    """The target labels: ``current`` (N, c_dim) with ``settings`` applied, a chosen hair colour clearing the others."""
    target = current.clone()
    hair = [i for i, a in enumerate(attrs) if a in HAIR_COLOURS]
    for name, value in settings.items():
        i = list(attrs).index(name)
        if value == 1 and i in hair:
            target[:, hair] = 0
        target[:, i] = value
    return target


@dataclasses.dataclass
class FaceEdit:
    """What happened to one face: where it was, the attributes the classifier read and the target."""

    box: tuple[float, float, float, float]
    current: list[str]
    target: list[str]


def feathered_square(size: int, feather: float) -> np.ndarray:
    """A (size, size) float32 mask: 1 inside, falling linearly to 0 over ``feather * size`` pixels at each edge."""
    width = max(1.0, feather * size)
    centres = np.arange(size, dtype=np.float32) + 0.5
    ramp = np.clip(np.minimum(centres, size - centres) / width, 0, 1)
    return np.minimum.outer(ramp, ramp).astype(np.float32)


@torch.inference_mode()
def edit_faces(image: np.ndarray, landmarks: Sequence[np.ndarray], g: Generator, d: Discriminator,
               attrs: Sequence[str], settings: dict[str, float], image_size: int, feather: float = 0.08,
               device: torch.device | str = "cpu") -> tuple[np.ndarray, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The photo with every face (its 68 landmarks given) edited; and per face its (current, target) labels."""
    if not len(landmarks):
        return image.copy(), []
    h, w = image.shape[:2]
    mats = [crop_matrix(lm, image_size) for lm in landmarks]
    crops = [warp_to_face(image, m, image_size) for m in mats]
    # crops are already image_size squares: preprocess only converts them (BGR uint8 -> RGB [-1, 1] CHW)
    x = torch.from_numpy(np.stack([preprocess(c, image_size, image_size) for c in crops])).to(device)
    current = (d(x)[1] > 0).float()
    target = apply_settings(current, attrs, settings)
    edited, kept = g(torch.cat([x, x]), torch.cat([target, current])).float().chunk(2)
    change = ((edited - kept) * 127.5).permute(0, 2, 3, 1).flip(3).cpu().numpy()  # BGR pixel units
    mask = feathered_square(image_size, feather)
    out = image.astype(np.float32)
    for mat, delta in zip(mats, change):
        soft = warp_to_image(mask, mat, w, h, cv2.INTER_LINEAR)
        out += warp_to_image(delta, mat, w, h) * soft[..., None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8), list(zip(current.cpu(), target.cpu()))


def find_faces(image: np.ndarray, detector: Detector, landmarker: Landmarker, min_size: int):
    """(box, 68 landmarks) of every face of at least ``min_size`` pixels, largest first."""
    found = sorted((d for d in detector.detect(image) if d.size >= min_size), key=lambda d: -d.size)
    return [(d.box, landmarker.landmarks(image, d.box)) for d in found]


def _names(labels: torch.Tensor, attrs: Sequence[str]) -> list[str]:
    return [a for a, v in zip(attrs, labels.tolist()) if v > 0.5]


def input_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files given directly or as folders, each once."""
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += list_images(item)
        elif item.is_file() and is_image_file(item):
            paths.append(item)
        else:
            raise FacelabError(f"{item} is not an image file or a folder of images; check the path")
    return list(dict.fromkeys(paths))


def output_paths(paths: Sequence[Path], output: Path) -> list[Path]:
    """One input and an image name: that file; otherwise files of the inputs' names in the folder ``output``."""
    if len(paths) == 1 and is_image_file(output) and not output.is_dir():
        return [output]
    names = [p.name for p in paths]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise FacelabError(f"two inputs are named {twice[0]}; their edits would overwrite each other in {output}: "
                           f"edit them in separate runs")
    return [output / n for n in names]


def edit_files(inputs: Sequence[str | Path], output: str | Path, checkpoint: str | Path, settings: Sequence[str],
               cfg: EditConfig | None = None) -> dict[Path, list[FaceEdit]]:
    """Edit every face of every input photo and write the results; maps each input to its faces' edits
    (an empty list: no face found, the photo is not written)."""
    cfg = cfg or EditConfig()
    paths = input_images(inputs)
    outs = output_paths(paths, Path(output))
    device = resolve_device(cfg.device)
    g, d, model_cfg, step = load_models(checkpoint, device)
    wanted = parse_settings(settings, model_cfg.selected_attrs)
    attrs = model_cfg.selected_attrs
    detector = make_detector(cfg.detector, cfg.detector_weights, cfg.device)
    landmarker = make_landmarker(cfg.landmarker, cfg.landmarker_weights, cfg.device)
    stamp = Stamp(Credentials("attribute edit", model_sha256(checkpoint))) if cfg.provenance else None
    log.info("editing with the iteration-%d generator of %s", step, checkpoint)
    results: dict[Path, list[FaceEdit]] = {}
    for path, out in progress(list(zip(paths, outs)), desc="edit", unit="photo"):
        image = read_image(path)
        faces = find_faces(image, detector, landmarker, cfg.min_face_size)
        results[path] = []
        if not faces:
            log.warning("no face found in %s; not written (try --detector mtcnn for small or turned faces)", path)
            continue
        edited, labels = edit_faces(image, [lm for _, lm in faces], g, d, attrs, wanted, model_cfg.image_size,
                                    cfg.feather, device)
        write_image(out, stamp.mark(edited) if stamp else edited)  # the whole photo: a region alone reads too weakly
        if stamp is not None:
            stamp.sign(out)
        results[path] = [FaceEdit(tuple(map(float, box)), _names(cur, attrs), _names(trg, attrs))
                         for (box, _), (cur, trg) in zip(faces, labels)]
    return results
