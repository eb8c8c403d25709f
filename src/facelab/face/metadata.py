"""Face metadata embedded in the aligned image file itself, so a faceset is just a folder of images.

PNG files get a private ancillary chunk ``flMd``; JPEG files an APP15 segment tagged ``FACELAB``. Both
hold the same JSON. Copying a file keeps it; an editor or ``cv2.imwrite`` re-save drops it, which
:func:`read_meta` reports as ``None`` and :func:`require_meta` as a one-line error.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from facelab.core.errors import FacelabError
from facelab.core.files import atomic_write_bytes
from facelab.io.images import decode_image, encode_image

FORMAT_VERSION = 1
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_CHUNK = b"flMd"
_JPEG_TAG = b"FACELAB\x00"


@dataclass
class FaceMeta:
    """Everything later stages need to know about an aligned face without re-detecting it."""

    source_filename: str  # the frame image or video the face came from (name only)
    source_frame: int | None  # frame index in a video (None for photos and frame folders)
    source_size: tuple[int, int]  # (width, height) of the source image
    face_index: int  # which face of that source image (0 = largest)
    source_rect: list[float]  # detector box x0, y0, x1, y1 in the source
    source_landmarks: np.ndarray  # (68, 2) in source pixels
    landmarks: np.ndarray  # (68, 2) in aligned-image pixels
    image_to_face: np.ndarray  # (2, 3) source pixels -> aligned pixels
    face_type: str
    size: int
    detector: str
    landmarker: str
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    extra: dict = field(default_factory=dict)  # later stages: XSeg labels and applied mask (facelab.face.masks)

    def to_json(self) -> bytes:
        d = asdict(self)
        for k in ("source_landmarks", "landmarks", "image_to_face"):
            d[k] = np.asarray(getattr(self, k), np.float64).round(4).tolist()
        d["source_size"] = list(self.source_size)
        d["version"] = FORMAT_VERSION
        return json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "FaceMeta":
        d = json.loads(data)
        d.pop("version", None)
        d["source_size"] = tuple(d["source_size"])
        d["source_landmarks"] = np.array(d["source_landmarks"], np.float64)
        d["landmarks"] = np.array(d["landmarks"], np.float64)
        d["image_to_face"] = np.array(d["image_to_face"], np.float64)
        return cls(**d)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def _png_chunks(data: bytes):
    pos = len(_PNG_SIG)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        yield pos, kind, data[pos + 8 : pos + 8 + length], pos + 12 + length
        pos += 12 + length


def _embed(data: bytes, meta_json: bytes) -> bytes:
    if data.startswith(_PNG_SIG):
        out, kept = bytearray(_PNG_SIG), []
        for start, kind, _, end in _png_chunks(data):
            if kind == _PNG_CHUNK:
                continue
            if kind == b"IEND":
                kept.append(_png_chunk(_PNG_CHUNK, meta_json))
            kept.append(data[start:end])
        return bytes(out + b"".join(kept))
    if data.startswith(b"\xff\xd8"):
        payload = _JPEG_TAG + meta_json
        if len(payload) + 2 > 0xFFFF:
            raise FacelabError("face metadata too large for a JPEG segment; save the faceset as PNG")
        segment = b"\xff\xef" + struct.pack(">H", len(payload) + 2) + payload
        return data[:2] + segment + _strip_jpeg_meta(data[2:])
    raise FacelabError("face metadata can only be embedded in PNG or JPEG files")


def _strip_jpeg_meta(body: bytes) -> bytes:
    pos = 0
    while body[pos : pos + 2] == b"\xff\xef":
        (length,) = struct.unpack(">H", body[pos + 2 : pos + 4])
        if body[pos + 4 : pos + 4 + len(_JPEG_TAG)] != _JPEG_TAG:
            break
        pos += 2 + length
    return body[pos:]


def _extract(data: bytes) -> bytes | None:
    if data.startswith(_PNG_SIG):
        for _, kind, payload, _ in _png_chunks(data):
            if kind == _PNG_CHUNK:
                return payload
        return None
    if data.startswith(b"\xff\xd8"):
        pos = 2
        while pos + 4 <= len(data) and data[pos] == 0xFF:
            marker = data[pos + 1]
            if marker == 0xDA:  # start of scan: no more metadata segments
                return None
            (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
            payload = data[pos + 4 : pos + 2 + length]
            if marker == 0xEF and payload.startswith(_JPEG_TAG):
                return payload[len(_JPEG_TAG) :]
            pos += 2 + length
    return None


def encode_face(image: np.ndarray, meta: FaceMeta, ext: str = ".jpg", jpeg_quality: int = 95) -> bytes:
    return _embed(encode_image(image, ext, jpeg_quality), meta.to_json())


def write_face(path: str | Path, image: np.ndarray, meta: FaceMeta, jpeg_quality: int = 95) -> None:
    path = Path(path)
    atomic_write_bytes(path, encode_face(image, meta, path.suffix, jpeg_quality))


def meta_from_bytes(data: bytes, name: str = "image") -> FaceMeta | None:
    raw = _extract(data)
    if raw is None:
        return None
    try:
        return FaceMeta.from_json(raw)
    except (ValueError, TypeError, KeyError) as exc:
        raise FacelabError(f"{name}: facelab metadata is damaged ({type(exc).__name__}); re-extract this face") from None


def read_meta(path: str | Path) -> FaceMeta | None:
    path = Path(path)
    return meta_from_bytes(path.read_bytes(), str(path))


def require_meta(meta: FaceMeta | None, path: str | Path) -> FaceMeta:
    if meta is None:
        raise FacelabError(
            f"{path} has no facelab metadata (not extracted by facelab, or re-saved by an editor that drops it); "
            "re-extract it with `facelab extract`"
        )
    return meta


def read_face(path: str | Path) -> tuple[np.ndarray, FaceMeta]:
    """The aligned face (BGR uint8) and its metadata; a file without metadata is an error."""
    path = Path(path)
    data = path.read_bytes()
    return decode_image(data, str(path)), require_meta(meta_from_bytes(data, str(path)), path)


def embed_meta(data: bytes, meta: FaceMeta) -> bytes:
    """The encoded face ``data`` with its metadata replaced by ``meta``; the pixels are not re-encoded."""
    return _embed(data, meta.to_json())


def write_meta(path: str | Path, meta: FaceMeta) -> None:
    """Replace the metadata of an existing face file without re-encoding its pixels."""
    path = Path(path)
    atomic_write_bytes(path, embed_meta(path.read_bytes(), meta))
