"""S3FD face detector (Zhang et al. 2017) running the user's own weight file.

Weights are not bundled (licence and size), so the layer names follow the public PyTorch port used by
DeepFaceLab and the ``face_alignment`` package: ``s3fd-619a316812.pth`` loads into :class:`S3FDNet`
with its original keys. The architecture reproduces that port exactly, including its ``fc6``
(3x3, padding 3, no dilation), because the released weights were trained with it.

The weight-file reader shared with the 2D-FAN landmarker is :func:`facelab.detect.weights.load_weights`.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facelab.core.device import resolve_device
from facelab.detect.base import Detection
from facelab.detect.weights import load_weights

MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)  # the Caffe training mean; input stays BGR 0..255
VARIANCES = (0.1, 0.2)
NMS_IOU = 0.3
PRE_NMS_TOP_K = 1000  # bounds the NMS IoU matrix when weights are poor and many anchors pass the threshold

# (name, in, out) of the VGG16 convolutions; a 2x2 max pool follows the last conv of each block.
_VGG = (
    (("conv1_1", 3, 64), ("conv1_2", 64, 64)),
    (("conv2_1", 64, 128), ("conv2_2", 128, 128)),
    (("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256)),
    (("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512)),
    (("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512)),
)
# Heads, finest first: (head prefix, feature map, channels, L2Norm scale or None). Strides 4..128.
_SOURCES = (
    ("conv3_3_norm", "conv3_3", 256, 10.0),
    ("conv4_3_norm", "conv4_3", 512, 8.0),
    ("conv5_3_norm", "conv5_3", 512, 5.0),
    ("fc7", "fc7", 1024, None),
    ("conv6_2", "conv6_2", 512, None),
    ("conv7_2", "conv7_2", 256, None),
)


class L2Norm(nn.Module):
    """Per-position L2 normalisation with a learned per-channel scale.

    The shallow VGG maps have much larger activations than the deep ones; normalising them keeps the
    three fine heads from dominating (the SSD/ParseNet trick). The parameter is named ``weight``.
    """

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10
        return x / norm * self.weight.view(1, -1, 1, 1)


class S3FDNet(nn.Module):
    """VGG16 + fc6/fc7 + two extra blocks, six (class, box) heads; returns one (logits, loc) pair per stride."""

    def __init__(self):
        super().__init__()
        for block in _VGG:
            for name, cin, cout in block:
                self.add_module(name, nn.Conv2d(cin, cout, 3, padding=1))
        self.fc6 = nn.Conv2d(512, 1024, 3, padding=3)
        self.fc7 = nn.Conv2d(1024, 1024, 1)
        self.conv6_1 = nn.Conv2d(1024, 256, 1)
        self.conv6_2 = nn.Conv2d(256, 512, 3, stride=2, padding=1)
        self.conv7_1 = nn.Conv2d(512, 128, 1)
        self.conv7_2 = nn.Conv2d(128, 256, 3, stride=2, padding=1)
        for name, _, channels, scale in _SOURCES:
            if scale is not None:
                self.add_module(name, L2Norm(channels, scale))
            # conv3_3 predicts 3 background logits + 1 face logit (max-out background, fewer false positives
            # from the many small anchors); every other head predicts 1 + 1.
            self.add_module(f"{name}_mbox_conf", nn.Conv2d(channels, 4 if name == "conv3_3_norm" else 2, 3, padding=1))
            self.add_module(f"{name}_mbox_loc", nn.Conv2d(channels, 4, 3, padding=1))

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        feats = {}
        for block in _VGG:
            for name, _, _ in block:
                x = F.relu(getattr(self, name)(x))
            feats[name] = x
            x = F.max_pool2d(x, 2, 2)
        for name in ("fc6", "fc7", "conv6_1", "conv6_2", "conv7_1", "conv7_2"):
            x = F.relu(getattr(self, name)(x))
            feats[name] = x
        out = []
        for name, source, _, scale in _SOURCES:
            f = getattr(self, name)(feats[source]) if scale is not None else feats[source]
            logits = getattr(self, f"{name}_mbox_conf")(f)
            if logits.shape[1] == 4:
                logits = torch.cat([logits[:, :3].amax(dim=1, keepdim=True), logits[:, 3:]], dim=1)
            out.append((logits, getattr(self, f"{name}_mbox_loc")(f)))
        return out


def decode(levels: list[tuple[torch.Tensor, torch.Tensor]], score_threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes ``(N, 4)`` x0,y0,x1,y1 in input pixels and face scores ``(N,)`` for anchors above the threshold.

    Level ``i`` has stride ``4 * 2**i`` and one square anchor of side ``4 * stride`` centred on each cell;
    the regression is SSD's (centre offset in anchor units times 0.1, log size times 0.2).
    """
    boxes, scores = [], []
    for i, (logits, loc) in enumerate(levels):
        stride = 4 * 2**i
        anchor = 4.0 * stride
        prob = logits[0].float().softmax(dim=0)[1]
        ys, xs = torch.nonzero(prob > score_threshold, as_tuple=True)
        d = loc[0][:, ys, xs].T.float()
        centre = (torch.stack([xs, ys], dim=1).float() + 0.5) * stride + d[:, :2] * VARIANCES[0] * anchor
        half = anchor * torch.exp(d[:, 2:] * VARIANCES[1]) / 2
        boxes.append(torch.cat([centre - half, centre + half], dim=1))
        scores.append(prob[ys, xs])
    return torch.cat(boxes), torch.cat(scores)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float = NMS_IOU) -> torch.Tensor:
    """Indices of the boxes greedy non-maximum suppression keeps, best score first.

    The IoU matrix is computed once; the greedy pass then only flips a mask per kept box.
    """
    order = scores.argsort(descending=True)
    b = boxes[order]
    area = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    # Row i marks the lower-scored boxes that box i suppresses if it survives.
    suppresses = (inter / (area[:, None] + area[None, :] - inter).clamp(min=1e-9) > iou_threshold).triu(1)
    alive = torch.ones(len(b), dtype=torch.bool)
    for i in range(len(b)):
        if alive[i]:
            alive &= ~suppresses[i]
    return order[alive]


class S3FDDetector:
    """S3FD: small (its finest anchors are 16 px), turned and occluded faces; slow on the CPU (VGG16)."""

    name = "s3fd"

    def __init__(self, weights_path: str | Path, device: str = "auto", score_threshold: float = 0.5,
                 max_side: int = 640):
        self.device = resolve_device(device)
        self.net = load_weights(S3FDNet(), weights_path, "an S3FD").to(self.device).eval()
        self.score_threshold = score_threshold
        self.max_side = max_side

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in a BGR (or gray) uint8 image, best first; large images are shrunk to ``max_side`` first."""
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        factor = min(1.0, self.max_side / max(image.shape[:2]))
        if factor < 1.0:
            image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(image.astype(np.float32) - MEAN_BGR).permute(2, 0, 1)[None].to(self.device)
        with torch.inference_mode():
            boxes, scores = decode(self.net(x), self.score_threshold)
        boxes, scores = boxes.cpu(), scores.cpu()
        top = scores.argsort(descending=True)[:PRE_NMS_TOP_K]
        boxes, scores = boxes[top], scores[top]
        keep = nms(boxes, scores)
        return [Detection(tuple((b / factor).tolist()), float(s)) for b, s in zip(boxes[keep], scores[keep])]
