"""Using a trained enhancer: on faces of any size (merge's ``--super-resolution``) and on a whole faceset
(``facelab faceset enhance``, DeepFaceLab's "faceset enhance").

A face of the enhancer's own size is restored as it is. A face of another size is scaled to it, and only
the network's correction (restored minus input) is scaled back and added to the face: a larger face keeps
the detail it has beyond the enhancer's size, a smaller one gets the restored face at its own size.

Enhancing a faceset writes new pixels and keeps every face's metadata (alignment, landmarks, XSeg labels
and masks), adding an ``enhanced`` entry that names the enhancer: a face that has one is never enhanced
again, so an interrupted ``--in-place`` run is finished by running it again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from facelab.core.config import check_range
from facelab.core.device import resolve_device
from facelab.core.errors import FacelabError
from facelab.core.progress import progress
from facelab.enhance.config import EnhancerConfig
from facelab.enhance.model_dir import load_network
from facelab.enhance.network import FaceEnhancer, restore
from facelab.face.metadata import FaceMeta, encode_face
from facelab.faceset.store import Faceset

ENHANCED_KEY = "enhanced"  # FaceMeta.extra entry of an enhanced face: {"enhancer", "iteration", "size"}
OUTPUT_SUFFIX = "_enhanced"  # DeepFaceLab writes the enhanced faceset beside the original, as FOLDER_enhanced


@dataclass
class Enhancer:
    model: FaceEnhancer
    cfg: EnhancerConfig
    device: torch.device
    precision: str = "fp32"
    iteration: int = 0
    name: str = ""  # the model folder's name, recorded in the faces it enhances
    batch_size: int = 16

    def restore(self, faces: np.ndarray) -> np.ndarray:
        """Faces at the enhancer's size ``(N, S, S, 3)`` (uint8 or float BGR) -> restored, float32 in [0, 1]."""
        return restore(self.model, faces, self.device, self.precision, self.batch_size)

    def enhance(self, faces: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each BGR face (uint8, or float in [0, 1]; any size) enhanced, as float32 in [0, 1] of its own size."""
        size = self.cfg.size
        floats = [f.astype(np.float32) / 255 if f.dtype == np.uint8 else f.astype(np.float32) for f in faces]
        if not floats:
            return []
        scaled = np.stack([f if f.shape[:2] == (size, size) else np.clip(cv2.resize(  # bicubic overshoots [0, 1]
            f, (size, size), interpolation=cv2.INTER_AREA if f.shape[0] > size else cv2.INTER_CUBIC), 0, 1) for f in floats])
        restored = self.restore(scaled)
        out = []
        for face, x, y in zip(floats, scaled, restored):
            if face.shape[:2] == (size, size):
                out.append(y)
                continue
            h, w = face.shape[:2]
            grow = cv2.INTER_CUBIC if h > size else cv2.INTER_AREA
            out.append(np.clip(face + cv2.resize(y - x, (w, h), interpolation=grow), 0, 1))
        return out

    def stamp(self) -> dict:
        """What an enhanced face's metadata records about the enhancer."""
        return {"enhancer": self.name, "iteration": self.iteration, "size": self.cfg.size}


def load_enhancer(model_dir: str | Path, device: str | torch.device = "auto", precision: str = "fp32",
                  batch_size: int = 16) -> Enhancer:
    """The enhancer of ``model_dir`` on ``device`` ("auto", "cpu", "cuda" or a torch device)."""
    dev = resolve_device(device) if isinstance(device, str) else device
    model, cfg, iteration = load_network(model_dir, dev)
    return Enhancer(model, cfg, dev, precision, iteration, Path(model_dir).name, batch_size)


def _as_uint8(face: np.ndarray) -> np.ndarray:
    return np.clip(np.round(face * 255), 0, 255).astype(np.uint8)


@dataclass
class EnhanceStats:
    enhanced: int  # faces enhanced by this run
    skipped: int  # faces already enhanced (kept as they were)
    folder: Path  # where the enhanced faceset is


def enhance_faceset(folder: str | Path, model_dir: str | Path, output: str | Path | None = None,
                    in_place: bool = False, device: str = "auto", batch_size: int = 16,
                    jpeg_quality: int = 95) -> EnhanceStats:
    """Enhance every face of ``folder`` (loose or packed) into ``output`` (default ``FOLDER_enhanced``, a new
    or empty folder; the input is left as it is) or, with ``in_place``, over the faces themselves. Loose
    faces are written one by one, each atomically; a pack is written once at the end."""
    check_range(batch_size, "batch_size", "faceset enhance", low=1)
    check_range(jpeg_quality, "jpeg_quality", "faceset enhance", low=1, high=100)
    if in_place and output is not None:
        raise FacelabError("faceset enhance: give either --in-place or -o/--output, not both")
    source = Faceset.open(folder)
    enhancer = load_enhancer(model_dir, device, batch_size=batch_size)  # a bad enhancer dir creates no output folder
    if in_place:
        target = source
    else:
        out = Path(output) if output is not None else source.root.with_name(source.root.name + OUTPUT_SUFFIX)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise FacelabError(f"{out} already exists and is not an empty folder; choose a new output folder with -o "
                               "(or --in-place to replace the faces themselves)")
        out.mkdir(parents=True, exist_ok=True)
        target = Faceset(list(source.names), list(source.blobs), list(source.metas), out, source.packed)
    todo = [i for i, meta in enumerate(source.metas) if ENHANCED_KEY not in meta.extra]
    done: dict[int, tuple[bytes, FaceMeta]] = {}  # a pack's new faces, written once at the end
    with progress(total=len(todo), desc="faceset enhance", unit="face") as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            faces = enhancer.enhance([source.image(i) for i in batch])
            changed = {}
            for i, face in zip(batch, faces):
                meta = dataclasses.replace(source.metas[i], extra={**source.metas[i].extra, ENHANCED_KEY: enhancer.stamp()})
                changed[i] = (encode_face(_as_uint8(face), meta, Path(source.names[i]).suffix, jpeg_quality), meta)
            if target.packed:
                done.update(changed)
            else:
                target.replace_faces(changed)
            bar.update(len(batch))
    skipped = sorted(set(range(len(source))) - set(todo))
    kept = {} if in_place else {i: (source.blobs[i], source.metas[i]) for i in skipped}  # enhanced before: copied
    target.replace_faces({**kept, **done})
    return EnhanceStats(len(todo), len(skipped), target.root)
