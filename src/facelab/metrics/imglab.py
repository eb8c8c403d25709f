"""Hand-made face boxes in dlib's imglab XML format (dlib's own training and testing annotations use it),
for measuring a detector's precision and recall against them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from facelab.core.errors import FacelabError
from facelab.metrics.iou import Box


def read_boxes(path: str | Path) -> dict[str, list[Box]]:
    """Image file name (as written in the XML) -> its boxes as (x0, y0, x1, y1); boxes marked
    ``ignore='1'`` (faces too hard to count either way) are left out."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise FacelabError(f"{path}: not a readable imglab XML file ({exc}); give dlib's <dataset><images> format") from None
    out: dict[str, list[Box]] = {}
    for image in root.iter("image"):
        boxes = []
        for b in image.iter("box"):
            if b.get("ignore") == "1":
                continue
            x, y = float(b.get("left")), float(b.get("top"))
            boxes.append((x, y, x + float(b.get("width")), y + float(b.get("height"))))
        out[image.get("file")] = boxes
    return out
