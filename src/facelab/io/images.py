"""Image files in, 8-bit BGR arrays out, whatever the file's mode (grey, 16-bit, alpha, CMYK)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facelab.core.errors import FacelabError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FacelabError(f"{folder} is not a folder; give a folder of images")
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


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
    buf = np.frombuffer(data, np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH) if buf.size else None
    if img is None:
        raise FacelabError(f"{name} is not a readable image (corrupt or unsupported format); re-export it as PNG or JPEG")
    return to_bgr8(img)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as 8-bit BGR (OpenCV turns CMYK JPEGs into BGR while decoding)."""
    path = Path(path)
    if not path.is_file():
        raise FacelabError(f"image {path} not found; check the path")
    return decode_image(path.read_bytes(), str(path))


def encode_image(img: np.ndarray, ext: str, jpeg_quality: int = 95) -> bytes:
    ext = ext.lower() if ext.startswith(".") else "." + ext.lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise FacelabError(f"could not encode an image as {ext}")
    return buf.tobytes()


def write_image(path: str | Path, img: np.ndarray, jpeg_quality: int = 95) -> None:
    from facelab.core.files import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, encode_image(img, path.suffix, jpeg_quality))
