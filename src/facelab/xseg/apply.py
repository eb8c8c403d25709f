"""``facelab xseg apply`` / ``remove``: store the trained segmenter's mask in every face of a faceset, or
delete it again. Faces are rewritten through :meth:`Faceset.update_metas` (atomic, pixels untouched)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facelab.core.device import resolve_device
from facelab.core.errors import FacelabError
from facelab.core.progress import progress
from facelab.faceset.store import Faceset
from facelab.face.masks.applied import remove_applied_mask, set_applied_mask
from facelab.face.masks.labels import clear_label
from facelab.xseg.data import faces_to_tensor
from facelab.xseg.model_dir import load_segmenter


def apply_segmenter(folder: str | Path, model_dir: str | Path, device: str = "auto", batch_size: int = 16) -> int:
    """Run the segmenter over every face of ``folder`` in batches and store its masks; the face count."""
    if batch_size < 1:
        raise FacelabError(f"batch size must be at least 1, not {batch_size}")
    dev = resolve_device(device)
    model, cfg = load_segmenter(model_dir, dev)
    faceset = Faceset.open(folder)
    faceset.require_face_type(cfg.face_type, f"the segmenter in {model_dir} works on")
    with torch.inference_mode(), progress(total=len(faceset), desc="xseg apply", unit="face") as bar:
        for start in range(0, len(faceset), batch_size):
            idx = np.arange(start, min(start + batch_size, len(faceset)))
            probs = torch.sigmoid(model(faces_to_tensor(faceset.images(cfg.resolution, idx)).to(dev)))[:, 0].cpu().numpy()
            for i, prob in zip(idx, probs):
                set_applied_mask(faceset.metas[i], prob)
            bar.update(len(idx))
    faceset.update_metas(dict(enumerate(faceset.metas)))
    return len(faceset)


def remove_masks(folder: str | Path, labels: bool = False) -> tuple[int, int]:
    """Delete the applied masks (and with ``labels`` the labels too); (masks removed, labels removed)."""
    faceset = Faceset.open(folder)
    changed, masks, labelled = {}, 0, 0
    for i, meta in enumerate(faceset.metas):
        had_mask = remove_applied_mask(meta)
        had_label = labels and clear_label(meta)
        if had_mask or had_label:
            changed[i] = meta
        masks += had_mask
        labelled += had_label
    faceset.update_metas(changed)
    return masks, labelled
