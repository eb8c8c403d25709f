"""MTCNN face detector (Zhang et al. 2016): a cascade of three small CNNs that finds turned and small faces.

dlib's HOG detector is frontal-only; MTCNN was trained on WIDER FACE and finds three-quarter views,
profiles and faces down to ~20 px at CPU speed. Its P/R/O-Net weights ship inside the
``facenet-pytorch`` wheel on PyPI (MIT licence). That package imports torchvision, which facelab never
installs, so it is installed with ``--no-deps`` and never imported: its ``data/*.pt`` state dicts are
located on disk and read with ``torch.load(weights_only=True)`` into the networks defined here, whose
layer names match those files.

The cascade (from the paper): P-Net scans an image pyramid and proposes boxes; R-Net re-scores 24x24
crops of them; O-Net re-scores 48x48 crops and regresses the final box and five landmarks. Boxes are
square; :class:`MtcnnDetector` maps them to the box dlib's 68-point landmarker was trained on.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from facelab.core.device import resolve_device
from facelab.core.packaged import packaged_file
from facelab.detect.base import Detection

WHEEL = "facenet-pytorch==2.6.0"
THRESHOLDS = (0.6, 0.7, 0.7)  # P, R, O-Net face probability to keep a box (the paper's values)
# A face is reported from this O-Net probability up. The paper's 0.7 let through foliage and patterned
# backgrounds at 0.72-0.78 on the shared clips and group photos, where real faces score above 0.99
# (`python benchmarks/detector_table.py clips --detectors mtcnn` and `groups`, docs/extraction.md).
MIN_SCORE = 0.9
PYRAMID_FACTOR = 0.709  # each pyramid level is this much smaller (area halves every two levels)
# The square O-Net box -> the box dlib's HOG detector gives for the same face, as (x0, y0, x1, y1)
# offsets in units of the O-Net box side: the medians over 442 real video frames (2 a second of every
# shared clip) where both found exactly one face (`python benchmarks/detector_table.py calibrate`).
TO_HOG_BOX = (-0.009, 0.223, 0.038, -0.052)


def weights_dir() -> Path:
    """The folder with ``pnet.pt``, ``rnet.pt``, ``onet.pt`` inside the installed facenet-pytorch wheel."""
    install = f"python3 -m pip install --no-deps {WHEEL}"
    return [packaged_file("facenet_pytorch", f"data/{n}.pt", install) for n in ("pnet", "rnet", "onet")][0].parent


class PNet(nn.Module):
    """Proposal net: fully convolutional, one 12x12 window per output cell, stride 2."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), 1)[:, 1]


def _flatten_wh(x: torch.Tensor) -> torch.Tensor:
    """Flatten a feature map in (width, height, channel) order, the order the dense weights were trained in."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class RNet(nn.Module):
    """Refinement net on 24x24 crops."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool(self.prelu1(self.conv1(x)))
        x = self.pool(self.prelu2(self.conv2(x)))
        x = self.prelu4(self.dense4(_flatten_wh(self.prelu3(self.conv3(x)))))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), 1)[:, 1]


class ONet(nn.Module):
    """Output net on 48x48 crops: score, box regression and five landmarks."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.pool, self.pool3 = nn.MaxPool2d(3, 2, ceil_mode=True), nn.MaxPool2d(2, 2, ceil_mode=True)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool(self.prelu1(self.conv1(x)))
        x = self.pool(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu5(self.dense5(_flatten_wh(self.prelu4(self.conv4(x)))))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), 1)[:, 1]


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, by_min: bool = False) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression; overlap is IoU, or intersection over the smaller
    box with ``by_min`` (O-Net's rule, which also removes a small box inside a large one)."""
    order = np.argsort(-scores)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        ih = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = iw * ih
        base = np.minimum(areas[i], areas[rest]) if by_min else areas[i] + areas[rest] - inter
        order = rest[inter / np.maximum(base, 1e-9) <= threshold]
    return np.asarray(keep, np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Each box grown to a square about its centre (the crops R- and O-Net expect)."""
    out = boxes.copy()
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2
    return out


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply a net's box regression: offsets are fractions of the box side, per edge."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    out = boxes.copy()
    out[:, :4] = boxes[:, :4] + offsets * np.stack([w, h, w, h], 1)
    return out


def _crops(rgb: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """``size`` x ``size`` crops of ``boxes`` (zero outside the image), normalised as the nets were trained."""
    h, w = rgb.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.float32)
    for k, (x0, y0, x1, y1) in enumerate(np.round(boxes[:, :4]).astype(np.int64)):
        if x1 <= x0 or y1 <= y0:
            continue
        patch = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return out


def _tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy((images - 127.5) * 0.0078125).permute(0, 3, 1, 2).contiguous().to(device)


class MtcnnDetector:
    """MTCNN with the facenet-pytorch weights; ``min_face`` is the smallest face side (pixels) searched."""

    name = "mtcnn"

    def __init__(self, device: str = "auto", min_face: int = 20):
        self.device = resolve_device(device)
        self.min_face = min_face
        folder = weights_dir()
        self.nets = []
        for cls, file in ((PNet, "pnet.pt"), (RNet, "rnet.pt"), (ONet, "onet.pt")):
            net = cls()
            net.load_state_dict(torch.load(folder / file, map_location="cpu", weights_only=True))
            self.nets.append(net.to(self.device).eval())

    def detect(self, image: np.ndarray) -> list[Detection]:
        boxes = self.detect_raw(image)
        out = []
        for x0, y0, x1, y1, score in boxes[boxes[:, 4] >= MIN_SCORE, :5]:
            side = x1 - x0
            dx0, dy0, dx1, dy1 = TO_HOG_BOX
            out.append(Detection((float(x0 + dx0 * side), float(y0 + dy0 * side), float(x1 + dx1 * side),
                                  float(y1 + dy1 * side)), float(score)))
        return out

    @torch.inference_mode()
    def detect_raw(self, image: np.ndarray) -> np.ndarray:
        """O-Net's boxes ``(N, 15)``: x0, y0, x1, y1, score, then five landmarks' x and y, best first."""
        rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB if image.ndim == 2 else cv2.COLOR_BGR2RGB)
        pnet, rnet, onet = self.nets
        boxes = self._propose(rgb, pnet)
        if len(boxes):
            boxes = self._refine(rgb, boxes, rnet, 24, THRESHOLDS[1])
        if not len(boxes):
            return np.zeros((0, 15), np.float32)
        offsets, points, probs = (t.cpu().numpy() for t in onet(_tensor(_crops(rgb, boxes, 48), self.device)))
        keep = probs >= THRESHOLDS[2]
        boxes, offsets, points = boxes[keep], offsets[keep], points[keep]
        side = (boxes[:, 2:3] - boxes[:, 0:1])
        points = np.concatenate([boxes[:, 0:1] + side * points[:, :5], boxes[:, 1:2] + side * points[:, 5:]], 1)
        boxes = _regress(np.concatenate([boxes[:, :4], probs[keep, None]], 1), offsets)
        out = np.concatenate([boxes, points], 1)
        return out[nms(out[:, :4], out[:, 4], 0.7, by_min=True)]

    def _refine(self, rgb: np.ndarray, boxes: np.ndarray, net: RNet, size: int, threshold: float) -> np.ndarray:
        """Re-score square crops with ``net``; keep the likely faces, suppress overlaps, regress, square."""
        offsets, probs = (t.cpu().numpy() for t in net(_tensor(_crops(rgb, boxes, size), self.device)))
        keep = probs >= threshold
        boxes = np.concatenate([boxes[keep, :4], probs[keep, None]], 1)
        kept = nms(boxes[:, :4], boxes[:, 4], 0.7)
        return _square(_regress(boxes[kept], offsets[keep][kept]))

    def _propose(self, rgb: np.ndarray, pnet: PNet) -> np.ndarray:
        h, w = rgb.shape[:2]
        scale, found = 12.0 / self.min_face, []
        while min(h, w) * scale >= 12:
            small = cv2.resize(rgb, (int(np.ceil(w * scale)), int(np.ceil(h * scale))), interpolation=cv2.INTER_AREA)
            offsets, probs = pnet(_tensor(small[None].astype(np.float32), self.device))
            probs, offsets = probs[0].cpu().numpy(), offsets[0].cpu().numpy()
            ys, xs = np.nonzero(probs >= THRESHOLDS[0])
            if len(ys):
                cells = np.stack([xs, ys], 1).astype(np.float32)
                level = np.concatenate([np.floor((2 * cells + 1) / scale), np.floor((2 * cells + 12) / scale),
                                        probs[ys, xs, None], offsets[:, ys, xs].T], 1)
                found.append(level[nms(level[:, :4], level[:, 4], 0.5)])
            scale *= PYRAMID_FACTOR
        if not found:
            return np.zeros((0, 5), np.float32)
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        return _square(_regress(boxes[:, :5], boxes[:, 5:9]))
