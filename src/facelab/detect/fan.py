"""2D-FAN 68-point landmarker (Bulat & Tzimiropoulos 2017) running the user's own weight file.

Weights are not bundled; layer names follow the public PyTorch port (``face_alignment``), so a
``2DFAN4`` state dict loads with its original keys. The crop (centre and scale from the box) and the
heatmap decoding follow that port too, because the released weights were trained on crops made that way.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facelab.core.device import resolve_device
from facelab.detect.weights import load_weights

INPUT = 256
HEATMAP = 64
POINTS = 68
REFERENCE_SCALE = 195.0  # box (w + h) / 195 is the crop scale the public port uses with S3FD boxes
CROP_UNIT = 200.0  # one unit of scale is 200 pixels of crop side
Y_SHIFT = 0.12  # the crop centre moves up by this fraction of the box height (boxes sit low on the face)


class ConvBlock(nn.Module):
    """Pre-activation residual block whose output concatenates three 3x3 branches (out/2, out/4, out/4).

    The concatenation gives a multi-scale receptive field at the cost of one 3x3 conv's width.
    """

    def __init__(self, cin: int, cout: int):
        super().__init__()
        half, quarter = cout // 2, cout // 4
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, half, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, quarter, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = nn.Conv2d(quarter, quarter, 3, padding=1, bias=False)
        self.downsample = (nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(True), nn.Conv2d(cin, cout, 1, bias=False))
                           if cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(F.relu(self.bn1(x)))
        b = self.conv2(F.relu(self.bn2(a)))
        c = self.conv3(F.relu(self.bn3(b)))
        return torch.cat([a, b, c], dim=1) + (x if self.downsample is None else self.downsample(x))


class HourGlass(nn.Module):
    """Recursive hourglass: at each level a full-resolution branch ``b1_L`` plus pool, ``b2_L``, the next
    level (or ``b2_plus_1`` at the bottom), ``b3_L`` and a 2x nearest upsample. Modules sit flat in this
    module under those names, as in the public port's state dicts."""

    def __init__(self, depth: int = 4, features: int = 256):
        super().__init__()
        self.depth = depth
        for level in range(depth, 0, -1):
            for branch in ("b1", "b2", "b3"):
                self.add_module(f"{branch}_{level}", ConvBlock(features, features))
        self.b2_plus_1 = ConvBlock(features, features)

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        up = getattr(self, f"b1_{level}")(x)
        low = getattr(self, f"b2_{level}")(F.max_pool2d(x, 2, 2))
        low = self._level(level - 1, low) if level > 1 else self.b2_plus_1(low)
        low = getattr(self, f"b3_{level}")(low)
        return up + F.interpolate(low, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth, x)


class FAN(nn.Module):
    """Stem to 64x64x256, then ``stacks`` hourglasses, each predicting 68 heatmaps that (except the last)
    are mapped back and added to the next stack's input (intermediate supervision)."""

    def __init__(self, stacks: int = 4):
        super().__init__()
        self.stacks = stacks
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = ConvBlock(64, 128)
        self.conv3 = ConvBlock(128, 128)
        self.conv4 = ConvBlock(128, 256)
        for i in range(stacks):
            self.add_module(f"m{i}", HourGlass(4, 256))
            self.add_module(f"top_m_{i}", ConvBlock(256, 256))
            self.add_module(f"conv_last{i}", nn.Conv2d(256, 256, 1))
            self.add_module(f"bn_end{i}", nn.BatchNorm2d(256))
            self.add_module(f"l{i}", nn.Conv2d(256, POINTS, 1))
            if i < stacks - 1:
                self.add_module(f"bl{i}", nn.Conv2d(256, 256, 1))
                self.add_module(f"al{i}", nn.Conv2d(POINTS, 256, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.conv4(self.conv3(F.max_pool2d(self.conv2(x), 2)))
        heatmaps = []
        for i in range(self.stacks):
            ll = getattr(self, f"top_m_{i}")(getattr(self, f"m{i}")(x))
            ll = F.relu(getattr(self, f"bn_end{i}")(getattr(self, f"conv_last{i}")(ll)))
            heatmaps.append(getattr(self, f"l{i}")(ll))
            if i < self.stacks - 1:
                x = x + getattr(self, f"bl{i}")(ll) + getattr(self, f"al{i}")(heatmaps[-1])
        return heatmaps


def crop_frame(box) -> tuple[np.ndarray, float]:
    """Centre ``(x, y)`` and side in pixels of the square image region the network sees for this box."""
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2 - Y_SHIFT * h])
    return centre, CROP_UNIT * (w + h) / REFERENCE_SCALE


def crop(image: np.ndarray, centre: np.ndarray, side: float, size: int = INPUT) -> np.ndarray:
    """The ``size`` x ``size`` resampling of the square ``side`` px region around ``centre`` (black outside).

    Coordinates are continuous (pixel ``i`` spans ``[i, i+1)``); OpenCV's integer pixel centres are
    converted by the half-pixel terms.
    """
    s = size / side
    origin = centre - side / 2
    m = np.array([[s, 0, s * (0.5 - origin[0]) - 0.5], [0, s, s * (0.5 - origin[1]) - 0.5]])
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def heatmaps_to_points(heatmaps: np.ndarray, centre: np.ndarray, side: float) -> np.ndarray:
    """``(68, 2)`` image coordinates from ``(68, H, W)`` heatmaps of the crop ``(centre, side)``.

    Each point is its heatmap's argmax cell centre moved a quarter cell toward the higher of its two
    neighbours on each axis (a cheap sub-cell estimate; skipped on the border, where a neighbour is missing).
    """
    n, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, -1).argmax(axis=1)
    ys, xs = np.divmod(flat, w)
    rows = np.arange(n)
    inner = (xs > 0) & (xs < w - 1) & (ys > 0) & (ys < h - 1)
    xi, yi = np.clip(xs, 1, w - 2), np.clip(ys, 1, h - 2)
    dx = heatmaps[rows, yi, xi + 1] - heatmaps[rows, yi, xi - 1]
    dy = heatmaps[rows, yi + 1, xi] - heatmaps[rows, yi - 1, xi]
    cells = np.stack([xs, ys], axis=1) + 0.5 + 0.25 * np.sign(np.stack([dx, dy], axis=1)) * inner[:, None]
    return centre - side / 2 + cells * (side / w)


class FANLandmarker:
    """2D-FAN (4 stacked hourglasses): robust 68 points on profile, blurred and occluded faces, but about
    50 GFLOP a face (~0.5 s on one CPU core), so it is the slow, accurate choice next to dlib68."""

    name = "fan"

    def __init__(self, weights_path: str | Path, device: str = "auto"):
        self.device = resolve_device(device)
        self.net = load_weights(FAN(4), weights_path, "a 2D-FAN (2DFAN4)").to(self.device).eval()

    def landmarks(self, image: np.ndarray, box) -> np.ndarray:
        """68 iBUG points in image pixels (float64) for the face in ``box`` of a BGR (or gray) uint8 image."""
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        centre, side = crop_frame(box)
        rgb = crop(image, centre, side)[:, :, ::-1]  # the port was trained on RGB in [0, 1]
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div(255).to(self.device)
        with torch.inference_mode():
            heatmaps = self.net(x)[-1][0].float().cpu().numpy()
        return heatmaps_to_points(heatmaps, centre, side).astype(np.float64)
