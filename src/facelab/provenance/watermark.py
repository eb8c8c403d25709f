"""An invisible mark in the pixels that says "made by facelab", readable after the metadata is gone.

Metadata (the C2PA manifest) is stripped by most upload pipelines, screenshots and re-encodes, so every
synthetic image also carries this mark. It is a spread-spectrum pattern of our own design:

- one 64x64 tile of band-limited noise, the sum of a public *sync* pattern and 32 *bit* patterns whose
  signs carry the payload (24 bits of the signing installation's id and an 8-bit checksum), all drawn
  from a fixed public seed, so anyone can check an image without a secret;
- the tile repeats over the whole image and is added to all three colour channels (the luma) at
  :data:`AMPLITUDE` grey levels, weighted by the picture's local detail (:func:`_weights`): half of it
  on flat walls and skies, where +-2 levels showed as a fine speckle, up to twice it in hair and fabric,
  where texture hides it; about 41-44 dB PSNR.

To read it, the image's fine detail (image minus a blurred copy) is folded onto one tile: the hundreds of
tiles of a frame, and of several frames of a video, add up while the picture beneath them averages out.
A circular cross-correlation of the fold with the sync pattern finds the tile's offset wherever the image
was cropped; trying a few rescale factors finds it after a resize. The correlation peak's distance from
the other 4095 offsets, in standard deviations, is the confidence; a mark is reported from
:data:`MIN_CONFIDENCE` up. The id is read from the bit patterns at the peak and reported only when its
checksum holds (small images have too few tiles to read all 32 bits without error every time).
docs/provenance.md records what survives (H.264, JPEG, resize, crop, colour shifts) and the false
positives on every unmarked real clip and photo of ../shared/data.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

import cv2
import numpy as np

TILE = 64
BITS = 32  # 24 payload bits + 8 checksum bits
AMPLITUDE = 2.0  # grey levels (RMS) added to each pixel
SEED = 0xFACE1AB  # public: the mark says "made by facelab", it does not hide who may read it
# rescale factors tried when reading: 1 (untouched), 2 (the image was halved), and resizes in between
SCALES = (1.0, 2.0, 1.5, 4 / 3, 1.25, 1 / 1.25, 0.5)
DETAIL_REF = 3.0  # local detail (mean |Laplacian|, grey levels) at which the mark has its full amplitude
WEIGHT_RANGE = (0.5, 2.0)
MIN_CONFIDENCE = 6.5  # peak distance in standard deviations: unmarked real media reach 5.5 at most (docs/provenance.md)
_DETAIL_SIGMA = 2.0  # the blur removed before folding: keeps the mark's band, drops the picture's broad shapes


@dataclass(frozen=True)
class MarkReading:
    found: bool  # the facelab mark is there (confidence >= MIN_CONFIDENCE)
    confidence: float  # correlation peak in standard deviations of the other offsets
    payload: int | None  # the 24-bit id, when its checksum holds
    scale: float  # the rescale factor at which the mark was read


@lru_cache(maxsize=1)
def _patterns() -> tuple[np.ndarray, np.ndarray]:
    """The sync pattern ``(TILE, TILE)`` and the bit patterns ``(BITS, TILE, TILE)``: white noise blurred
    cyclically (so tiles join seamlessly) to the band that compression and resizing keep, unit RMS."""
    rng = np.random.default_rng(SEED)
    noise = rng.standard_normal((1 + BITS, TILE, TILE))
    f = np.fft.fftfreq(TILE)
    band = np.exp(-(f[:, None] ** 2 + f[None, :] ** 2) / (2 * 0.12 ** 2))  # lowpass: ~1.3 px blur
    band[0, 0] = 0.0  # zero mean
    shaped = np.fft.ifft2(np.fft.fft2(noise) * band).real.reshape(1 + BITS, -1)
    # orthonormal (still in the band: QR only mixes band-limited patterns), so bits do not leak into each other
    q, _ = np.linalg.qr(shaped.T)
    shaped = (q.T * TILE).reshape(1 + BITS, TILE, TILE)  # unit RMS
    return shaped[0], shaped[1:]


def _bits(payload: int) -> np.ndarray:
    if not 0 <= payload < 1 << 24:
        raise ValueError("the watermark payload is a 24-bit id")
    check = zlib.crc32(payload.to_bytes(3, "big")) & 0xFF
    word = payload << 8 | check
    return np.array([(word >> (BITS - 1 - i)) & 1 for i in range(BITS)], np.int64)


def _payload(bits: np.ndarray) -> int | None:
    word = int("".join(str(int(b)) for b in bits), 2)
    payload, check = word >> 8, word & 0xFF
    return payload if zlib.crc32(payload.to_bytes(3, "big")) & 0xFF == check else None


@lru_cache(maxsize=8)
def tile(payload: int) -> np.ndarray:
    """The tile added to images for ``payload``: sync and signed bit patterns, RMS :data:`AMPLITUDE`."""
    sync, bit_patterns = _patterns()
    signs = 2.0 * _bits(payload) - 1.0
    out = sync + np.tensordot(signs, bit_patterns, 1) / np.sqrt(BITS)
    return (out * AMPLITUDE / out.std()).astype(np.float32)


@lru_cache(maxsize=4)
def _full_pattern(h: int, w: int, payload: int) -> np.ndarray:
    """The mark for an ``h`` x ``w`` image (float32), made once per frame size of a video."""
    return np.ascontiguousarray(np.tile(tile(payload), (-(-h // TILE), -(-w // TILE)))[:h, :w])


# the weight of each uint8 detail level, looked up in one pass instead of converted and clipped in two
_WEIGHT_OF_DETAIL = np.clip(np.arange(256, dtype=np.float32) * np.float32(1.0 / DETAIL_REF), *WEIGHT_RANGE).astype(np.float32)


def _weights(grey: np.ndarray) -> np.ndarray:
    """How strongly each pixel carries the mark: the local detail (|Laplacian| averaged over 9x9
    pixels) over :data:`DETAIL_REF`, between :data:`WEIGHT_RANGE`."""
    return cv2.LUT(cv2.blur(cv2.convertScaleAbs(cv2.Laplacian(grey, cv2.CV_16S)), (9, 9)), _WEIGHT_OF_DETAIL)


def embed(image: np.ndarray, payload: int) -> np.ndarray:
    """``image`` (uint8, grey or BGR/BGRA) with the mark added; an alpha channel is left as it is."""
    colour = np.ascontiguousarray(image[..., :3] if image.ndim == 3 else image)
    grey = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY) if colour.ndim == 3 else colour
    delta = cv2.multiply(_full_pattern(image.shape[0], image.shape[1], payload), _weights(grey))
    # the rounded positive and negative parts as uint8, added and subtracted with saturation: the same
    # pixels as clip(colour + rint(delta)) without widening the frame to int16 (a third faster at 720p)
    up, down = cv2.convertScaleAbs(cv2.max(delta, 0.0)), cv2.convertScaleAbs(cv2.min(delta, 0.0))
    if colour.ndim == 3:
        up, down = cv2.merge([up] * colour.shape[2]), cv2.merge([down] * colour.shape[2])
    marked = cv2.subtract(cv2.add(colour, up), down)
    if image.ndim == 3 and image.shape[2] == 4:
        return np.dstack([marked, image[..., 3]])
    return marked


def _detail(image: np.ndarray, scale: float) -> np.ndarray:
    grey = image if image.ndim == 2 else cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2GRAY)
    grey = grey.astype(np.float32)
    if scale != 1.0:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
    return grey - cv2.GaussianBlur(grey, (0, 0), _DETAIL_SIGMA)


def _fold(detail: np.ndarray) -> np.ndarray:
    """Sum of all whole tiles of ``detail``, each normalised by the picture's local detail energy so a
    textured region does not outweigh the flat ones where the mark stands out."""
    h, w = (detail.shape[0] // TILE) * TILE, (detail.shape[1] // TILE) * TILE
    tiles = detail[:h, :w].reshape(h // TILE, TILE, w // TILE, TILE).transpose(0, 2, 1, 3)
    energy = tiles.std(axis=(2, 3), keepdims=True) + 1.0
    return (tiles / energy).sum(axis=(0, 1))


def read(images: Iterable[np.ndarray]) -> MarkReading:
    """Look for the mark in one image or in several frames of one video (folded together)."""
    images = list(images)
    sync, bit_patterns = _patterns()
    sync_f = np.conj(np.fft.fft2(sync))
    best = MarkReading(False, 0.0, None, 1.0)
    best_fold, best_shift = None, (0, 0)
    for scale in SCALES:
        folds = [_fold(_detail(im, scale)) for im in images if min(im.shape[:2]) * scale >= TILE]
        if not folds:
            continue
        fold = np.sum(folds, axis=0)
        corr = np.fft.ifft2(np.fft.fft2(fold) * sync_f).real
        peak = np.unravel_index(int(np.argmax(corr)), corr.shape)
        others = np.delete(corr.ravel(), np.ravel_multi_index(peak, corr.shape))
        confidence = float((corr[peak] - others.mean()) / (others.std() + 1e-12))
        if confidence > best.confidence:
            best, best_fold, best_shift = MarkReading(False, confidence, None, scale), fold, peak
        if confidence >= MIN_CONFIDENCE:
            break  # the most likely scales come first: an untouched image is read once
    if best_fold is None or best.confidence < MIN_CONFIDENCE:
        return best
    aligned = np.roll(best_fold, (-best_shift[0], -best_shift[1]), axis=(0, 1))
    bits = (np.tensordot(bit_patterns, aligned, ((1, 2), (0, 1))) > 0).astype(np.int64)
    return MarkReading(True, best.confidence, _payload(bits), best.scale)
