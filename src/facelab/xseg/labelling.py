"""Labelling without a dedicated editor: mask images painted in any paint tool become face labels
(``facelab xseg import-masks``), and labels become mask images again to correct (``export-masks``).

A mask image has the file stem of its face (``00042_0.jpg`` -> ``00042_0.png``) and the face's size;
white (grey > 127) is face, black is not.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from facelab.core.errors import FacelabError
from facelab.faceset.store import Faceset
from facelab.io.images import list_images, read_image, write_image
from facelab.face.masks.applied import best_mask
from facelab.face.masks.labels import label_mask, set_label

log = logging.getLogger("facelab")


def import_masks(folder: str | Path, masks_dir: str | Path) -> int:
    """Label every face that has a mask image in ``masks_dir``; the number of faces labelled."""
    masks_dir = Path(masks_dir)
    if not masks_dir.is_dir():
        raise FacelabError(f"mask folder {masks_dir} not found; give the folder of mask images (one per face, "
                           "named like the face)")
    faceset = Faceset.open(folder)
    by_stem: dict[str, Path] = {}
    for path in list_images(masks_dir):
        if path.stem in by_stem:
            raise FacelabError(f"{by_stem[path.stem].name} and {path.name} in {masks_dir} are masks of the same face; "
                               "keep one")
        by_stem[path.stem] = path
    changed = {}
    for i, (name, meta) in enumerate(zip(faceset.names, faceset.metas)):
        path = by_stem.pop(Path(name).stem, None)
        if path is not None:
            grey = cv2.cvtColor(read_image(path), cv2.COLOR_BGR2GRAY)
            set_label(meta, grey > 127, str(path))
            changed[i] = meta
    if not changed:
        raise FacelabError(f"none of the mask images in {masks_dir} is named like a face of {faceset.root} "
                           f"(face {faceset.names[0]} needs mask {Path(faceset.names[0]).stem}.png)")
    if by_stem:
        log.warning(f"{len(by_stem)} mask images name no face of {faceset.root} and were skipped, "
                    f"e.g. {next(iter(by_stem.values())).name}")
    faceset.update_metas(changed)
    return len(changed)


def export_masks(folder: str | Path, out_dir: str | Path, applied: bool = False) -> int:
    """Write each labelled face's mask as ``OUT_DIR/<face stem>.png`` (255 = face) at the face's size; with
    ``applied``, faces with only an applied XSeg mask are written too, to correct and import as labels.
    Returns the number of masks written."""
    faceset = Faceset.open(folder)
    out_dir = Path(out_dir)
    written = 0
    for name, meta in zip(faceset.names, faceset.metas):
        mask = best_mask(meta) if applied else label_mask(meta)
        if mask is not None:
            write_image(out_dir / f"{Path(name).stem}.png", ((mask >= 0.5) * 255).astype(np.uint8))
            written += 1
    if not written:
        what = "labelled faces or applied XSeg masks" if applied else "labelled faces (add --applied for applied XSeg masks)"
        raise FacelabError(f"{faceset.root} has no {what}; nothing to export")
    return written
