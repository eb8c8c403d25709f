"""Colour transfer: make a face's colours match another image's, as DeepFaceLab's merger and trainer do.

All functions take float32 BGR images in [0, 1] and return the same. Statistics come from the pixels
whose mask is above 0.5 (every pixel when no mask is given), but the mapping is applied to every pixel
of the source, so a face's statistics can be matched while the rest of its crop follows smoothly.

Modes (the names users type in the merge config and the trainer's ``ct_mode``):

- ``rct``: Reinhard et al. 2001, per-channel mean and standard deviation in L*a*b*.
- ``lct``: linear transfer that makes the colour covariance equal the target's (C_t^1/2 C_s^-1/2).
- ``mkl``: the Monge-Kantorovich linear map (Pitie & Kokaram 2007): the covariance-matching linear map
  that moves colours the least; the identity when both covariances already agree.
- ``idt``: iterative distribution transfer (Pitie et al. 2005): repeated 1-D histogram matching along
  random rotations, which moves the whole 3-D distribution, not only its first two moments.
- ``sot``: sliced optimal transport: each step moves colours along a batch of random directions by the
  average 1-D transport displacement.
- ``mix``: lightness matched linearly (mean/std of L*), chroma (a*b*) by sliced optimal transport, so
  shading follows the target without the hue noise a full 3-D transport can bring.

A ``-m`` suffix (``mkl-m``, ``idt-m``, ``sot-m``, ``mix-m``) names the same transfer computed on the
masked face only; :func:`color_transfer` then insists on the masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from facelab.core.errors import FacelabError

# Fewer selected pixels than this give no usable statistics; the source is then returned unchanged.
MIN_PIXELS = 16
_EPS = 1e-6
# Number of quantiles used for 1-D distribution matching: plenty for 8-bit colours, cheap to interpolate.
_QUANTILES = 256


def _selection(mask: np.ndarray | None) -> np.ndarray | None:
    """Indices of the pixels (in H*W order) that a mask selects; ``None`` means every pixel."""
    if mask is None:
        return None
    return np.flatnonzero(np.asarray(mask).reshape(-1) > 0.5)


def _pick(pixels: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
    return pixels if idx is None else pixels[idx]


def _sqrtm(cov: np.ndarray, inverse: bool = False) -> np.ndarray:
    """Square root (or inverse square root) of a symmetric positive semi-definite matrix."""
    vals, vecs = np.linalg.eigh(cov)
    vals = np.maximum(vals, 1e-12)  # products of covariances are tiny in [0, 1] units: no larger floor
    vals = 1.0 / np.sqrt(vals) if inverse else np.sqrt(vals)
    return (vecs * vals) @ vecs.T


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = x.mean(0)
    d = x - mu
    cov = d.T @ d / max(len(x) - 1, 1) + _EPS * np.eye(x.shape[1])
    return mu, cov


def _rct(src: np.ndarray, s_sel: np.ndarray, t_sel: np.ndarray) -> np.ndarray:
    scale = t_sel.std(0) / (s_sel.std(0) + _EPS)
    return (src - s_sel.mean(0)) * scale + t_sel.mean(0)


def _lct(src: np.ndarray, s_sel: np.ndarray, t_sel: np.ndarray) -> np.ndarray:
    mu_s, cov_s = _moments(s_sel)
    mu_t, cov_t = _moments(t_sel)
    mat = _sqrtm(cov_t) @ _sqrtm(cov_s, inverse=True)
    return (src - mu_s) @ mat.T + mu_t


def _mkl(src: np.ndarray, s_sel: np.ndarray, t_sel: np.ndarray) -> np.ndarray:
    mu_s, cov_s = _moments(s_sel)
    mu_t, cov_t = _moments(t_sel)
    s_half, s_inv_half = _sqrtm(cov_s), _sqrtm(cov_s, inverse=True)
    mat = s_inv_half @ _sqrtm(s_half @ cov_t @ s_half) @ s_inv_half  # symmetric
    return (src - mu_s) @ mat + mu_t


def _match_1d(values: np.ndarray, ref_from: np.ndarray, ref_to: np.ndarray) -> np.ndarray:
    """Map each column of ``values`` through the quantile map that takes ``ref_from``'s 1-D distribution
    to ``ref_to``'s (columns matched pairwise)."""
    probs = np.linspace(0.0, 1.0, _QUANTILES)
    q_from = np.quantile(ref_from, probs, axis=0)
    q_to = np.quantile(ref_to, probs, axis=0)
    return np.stack([np.interp(values[:, j], q_from[:, j], q_to[:, j]) for j in range(values.shape[1])], axis=1)


def _random_rotation(rng: np.random.Generator, dim: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def _idt(src: np.ndarray, idx: np.ndarray | None, t_sel: np.ndarray, rng: np.random.Generator,
         iterations: int = 10) -> np.ndarray:
    """Each iteration rotates colour space randomly and histogram-matches every rotated axis."""
    out = src.copy()
    for _ in range(iterations):
        rot = _random_rotation(rng, src.shape[1])
        proj = out @ rot
        out += (_match_1d(proj, _pick(proj, idx), t_sel @ rot) - proj) @ rot.T
    return out


def _sot(src: np.ndarray, idx: np.ndarray | None, t_sel: np.ndarray, rng: np.random.Generator,
         steps: int = 10, batch: int = 5) -> np.ndarray:
    """Each step averages the 1-D optimal transport displacement over ``batch`` random directions."""
    out = src.copy()
    for _ in range(steps):
        dirs = rng.standard_normal((src.shape[1], batch))
        dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
        proj = out @ dirs
        out += (_match_1d(proj, _pick(proj, idx), t_sel @ dirs) - proj) @ dirs.T / batch
    return out


def _to_lab(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_BGR2LAB)


def _from_lab(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img.astype(np.float32), cv2.COLOR_LAB2BGR)


def _mix(src: np.ndarray, idx: np.ndarray | None, s_sel: np.ndarray, t_sel: np.ndarray,
         rng: np.random.Generator) -> np.ndarray:
    """L* linearly, a*b* by sliced transport."""
    out = np.empty_like(src)
    out[:, :1] = _rct(src[:, :1], s_sel[:, :1], t_sel[:, :1])
    out[:, 1:] = _sot(src[:, 1:], idx, t_sel[:, 1:], rng)
    return out


@dataclass(frozen=True)
class Transfer:
    """One colour transfer: ``fn(pixels, selected indices, selected source pixels, selected target
    pixels, rng)`` -> the new pixels, in L*a*b* when ``lab`` (else RGB in [0, 1])."""

    fn: Callable[[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray, np.random.Generator], np.ndarray]
    lab: bool = False


# The colour transfers by name; a new one is a function above and one line here.
TRANSFERS: dict[str, Transfer] = {
    "rct": Transfer(lambda src, idx, s_sel, t_sel, rng: _rct(src, s_sel, t_sel), lab=True),
    "lct": Transfer(lambda src, idx, s_sel, t_sel, rng: _lct(src, s_sel, t_sel)),
    "mkl": Transfer(lambda src, idx, s_sel, t_sel, rng: _mkl(src, s_sel, t_sel)),
    "idt": Transfer(lambda src, idx, s_sel, t_sel, rng: _idt(src, idx, t_sel, rng)),
    "sot": Transfer(lambda src, idx, s_sel, t_sel, rng: _sot(src, idx, t_sel, rng)),
    "mix": Transfer(_mix, lab=True),
}
BASE_MODES = ("none", *TRANSFERS)
MODES = BASE_MODES + ("mkl-m", "idt-m", "sot-m", "mix-m")


def _transfer_one(mode: str, source: np.ndarray, target: np.ndarray, source_mask: np.ndarray | None,
                  target_mask: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    h, w = source.shape[:2]
    transfer = TRANSFERS[mode]
    lab = transfer.lab
    src = (_to_lab(source) if lab else source).reshape(-1, 3).astype(np.float64)
    tgt = (_to_lab(target) if lab else target).reshape(-1, 3).astype(np.float64)
    idx = _selection(source_mask)
    s_sel, t_sel = _pick(src, idx), _pick(tgt, _selection(target_mask))
    if len(s_sel) < MIN_PIXELS or len(t_sel) < MIN_PIXELS:
        return source.copy()
    out = transfer.fn(src, idx, s_sel, t_sel, rng)
    out = out.reshape(h, w, 3).astype(np.float32)
    if lab:
        out[..., 0] = np.clip(out[..., 0], 0.0, 100.0)
        out = _from_lab(out)
    return np.clip(out, 0.0, 1.0)


def histogram_match(source: np.ndarray, target: np.ndarray, source_mask: np.ndarray | None = None,
                    target_mask: np.ndarray | None = None, strength: float = 1.0) -> np.ndarray:
    """Match each BGR channel's histogram of ``source`` to ``target``'s (statistics from the masked pixels),
    moving ``strength`` (0..1) of the way; the merger's hist-match blend."""
    src = source.reshape(-1, 3).astype(np.float64)
    tgt = target.reshape(-1, 3).astype(np.float64)
    s_sel, t_sel = _pick(src, _selection(source_mask)), _pick(tgt, _selection(target_mask))
    if len(s_sel) < MIN_PIXELS or len(t_sel) < MIN_PIXELS:
        return source.astype(np.float32, copy=True)
    out = src + strength * (_match_1d(src, s_sel, t_sel) - src)
    return np.clip(out.reshape(source.shape), 0.0, 1.0).astype(np.float32)


def _check_image(name: str, img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim not in (3, 4) or img.shape[-1] != 3:
        raise FacelabError(f"color_transfer: {name} must be (H, W, 3) or (N, H, W, 3) BGR, got shape {img.shape}")
    return img.astype(np.float32, copy=False)


def _check_mask(name: str, mask: np.ndarray | None, img: np.ndarray) -> np.ndarray | None:
    """Masks may carry a trailing channel of 1; one (H, W) mask may serve a whole batch."""
    if mask is None:
        return None
    m = np.asarray(mask, np.float32)
    if m.ndim == img.ndim and m.shape[-1] == 1:
        m = m[..., 0]
    if m.shape[-2:] != img.shape[-3:-1] or m.ndim > img.ndim - 1:
        raise FacelabError(f"color_transfer: {name} of shape {m.shape} does not fit an image of shape {img.shape}")
    return m


def color_transfer(mode: str, source: np.ndarray, target: np.ndarray, source_mask: np.ndarray | None = None,
                   target_mask: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Recolour ``source`` so its colour statistics match ``target``'s.

    ``source`` and ``target`` are float32 BGR in [0, 1], (H, W, 3) or batched (N, H, W, 3) (they may
    differ in size; a single target serves a whole batch). Masks are (H, W), (H, W, 1) or batched;
    pixels above 0.5 give the statistics. ``idt``, ``sot`` and ``mix`` draw random directions from
    ``seed``, so a call is repeatable.
    """
    if mode not in MODES:
        raise FacelabError(f"unknown colour transfer {mode!r}; use one of {', '.join(MODES)}")
    src = _check_image("source", source)
    tgt = _check_image("target", target)
    s_mask = _check_mask("source_mask", source_mask, src)
    t_mask = _check_mask("target_mask", target_mask, tgt)
    if mode == "none":
        return src.copy()
    if mode.endswith("-m"):
        if s_mask is None or t_mask is None:
            raise FacelabError(f"colour transfer {mode} needs a source and a target mask")
        mode = mode[:-2]
    rng = np.random.default_rng(seed)
    if src.ndim == 3:
        return _transfer_one(mode, src, tgt if tgt.ndim == 3 else tgt[0], s_mask, t_mask, rng)

    def item(arr: np.ndarray | None, i: int, batched_ndim: int) -> np.ndarray | None:
        return arr[i] if arr is not None and arr.ndim == batched_ndim else arr

    out = np.empty_like(src)
    for i in range(len(src)):
        out[i] = _transfer_one(mode, src[i], item(tgt, i, 4), item(s_mask, i, 3), item(t_mask, i, 3), rng)
    return out
