"""Image files in, 8-bit BGR arrays out, whatever the file's mode (grey, 16-bit, alpha, CMYK), upright.

Phones store portrait photos as landscape pixels plus an EXIF orientation tag; decoding with
``IMREAD_UNCHANGED`` (needed for 16-bit and alpha) ignores the tag, so every read applies it here:
a face lying on its side is not found by any detector.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facelab.core.errors import FacelabError
from facelab.core.files import is_hidden
from facelab.io.png import can_encode, encode_png

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FacelabError(f"{folder} is not a folder; give a folder of images")
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p) and not is_hidden(p))


def _tiff_orientation(tiff: bytes) -> int:
    """The Orientation tag (0x0112) of the first IFD of an EXIF/TIFF block; 1 (upright) if absent."""
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    ifd = int.from_bytes(tiff[4:8], order)
    count = int.from_bytes(tiff[ifd : ifd + 2], order) if ifd + 2 <= len(tiff) else 0
    for k in range(count):
        entry = tiff[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
        if len(entry) < 12:
            break
        if int.from_bytes(entry[:2], order) == 0x0112:
            value = int.from_bytes(entry[8:10], order)
            return value if 1 <= value <= 8 else 1
    return 1


def exif_orientation(data: bytes) -> int:
    """EXIF orientation 1..8 of an encoded JPEG (APP1 ``Exif``) or PNG (``eXIf`` chunk); 1 if none."""
    if data.startswith(b"\xff\xd8"):
        pos = 2
        while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] not in (0xD9, 0xDA):
            length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            if data[pos + 1] == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\0\0":
                return _tiff_orientation(data[pos + 10 : pos + 2 + length])
            pos += 2 + length
    elif data.startswith(b"\x89PNG\r\n\x1a\n"):
        pos = 8
        while pos + 8 <= len(data):
            length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
            if kind == b"eXIf":
                return _tiff_orientation(data[pos + 8 : pos + 8 + length])
            if kind in (b"IDAT", b"IEND"):
                break
            pos += 12 + length
    return 1


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Turn pixels stored with EXIF ``orientation`` upright (1 = as stored, 6 = rotate 90 degrees clockwise...)."""
    if orientation in (5, 7):  # mirrored about a diagonal
        img = cv2.transpose(img)
    turn = {3: cv2.ROTATE_180, 6: cv2.ROTATE_90_CLOCKWISE, 7: cv2.ROTATE_180, 8: cv2.ROTATE_90_COUNTERCLOCKWISE}
    if orientation in turn:
        img = cv2.rotate(img, turn[orientation])
    if orientation in (2, 4):
        img = cv2.flip(img, 1 if orientation == 2 else 0)
    return img


def to_bgr8(img: np.ndarray) -> np.ndarray:
    """Convert any decoded image to 3-channel 8-bit BGR: grey is replicated, 16-bit is scaled,
    alpha is composited over black (so transparent padding does not look like skin)."""
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        return (img[:, :, :3].astype(np.float32) * alpha).round().astype(np.uint8)
    return np.ascontiguousarray(img[:, :, :3])


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Decode any image file's bytes to upright 8-bit BGR (see the module doc)."""
    buf = np.frombuffer(data, np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH) if buf.size else None
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):
            raise FacelabError(f"{name} claims more pixels than an image may have (over 2^30); it is damaged or "
                               "absurdly large: shrink it or leave it out") from None
        img = None
    if img is None:
        raise FacelabError(f"{name} is not a readable image (corrupt or unsupported format); re-export it as PNG or JPEG")
    return apply_orientation(to_bgr8(img), exif_orientation(data))


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as 8-bit BGR (OpenCV turns CMYK JPEGs into BGR while decoding)."""
    path = Path(path)
    if not path.is_file():
        raise FacelabError(f"image {path} not found; check the path")
    return decode_image(path.read_bytes(), str(path))


def encode_image(img: np.ndarray, ext: str, jpeg_quality: int = 95) -> bytes:
    ext = ext.lower() if ext.startswith(".") else "." + ext.lower()
    if ext == ".png" and can_encode(img):
        return encode_png(img)  # faster than OpenCV's encoder (facelab.io.png)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise FacelabError(f"could not encode an image as {ext}")
    return buf.tobytes()


def write_image(path: str | Path, img: np.ndarray, jpeg_quality: int = 95) -> None:
    from facelab.core.files import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, encode_image(img, path.suffix, jpeg_quality))
