"""A minimal TensorBoard event-file writer for scalars, so runs can be watched without installing TensorFlow.

The file format is a sequence of records ``len(u64) crc(len) data crc(data)`` where ``data`` is an
``Event`` protocol buffer and ``crc`` is the masked CRC-32C TensorBoard expects. Only the few protobuf
fields needed for scalar summaries are encoded here.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

_POLY = 0x82F63B78
_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ _POLY if _c & 1 else _c >> 1
    _TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_field(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, body: bytes) -> bytes:
    return struct.pack("<Bd", 1 << 3 | 1, wall_time) + _varint(2 << 3) + _varint(step) + body


class EventWriter:
    """Appends scalar events to ``events.out.tfevents.<time>.<host>`` in ``log_dir``."""

    def __init__(self, log_dir: str | Path):
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.path = log_dir / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
        self._fh = open(self.path, "ab")
        self._write(_event(time.time(), 0, _len_field(3, b"brain.Event:2")))

    def _write(self, data: bytes) -> None:
        header = struct.pack("<Q", len(data))
        self._fh.write(header + struct.pack("<I", _masked_crc(header)) + data + struct.pack("<I", _masked_crc(data)))

    def add_scalars(self, step: int, values: dict[str, float], wall_time: float | None = None) -> None:
        summary = b"".join(
            _len_field(1, _len_field(1, tag.encode()) + struct.pack("<Bf", 2 << 3 | 5, float(v)))
            for tag, v in values.items()
        )
        self._write(_event(wall_time or time.time(), step, _len_field(5, summary)))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_scalars(path: str | Path) -> list[tuple[int, str, float]]:
    """Read back ``(step, tag, value)`` from an event file, checking every CRC (used by tests and tools)."""
    data = Path(path).read_bytes()
    out: list[tuple[int, str, float]] = []
    pos = 0
    while pos < len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        if struct.unpack("<I", data[pos + 8 : pos + 12])[0] != _masked_crc(header):
            raise ValueError(f"{path}: bad length CRC at byte {pos}")
        body = data[pos + 12 : pos + 12 + length]
        if struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])[0] != _masked_crc(body):
            raise ValueError(f"{path}: bad data CRC at byte {pos}")
        pos += 16 + length
        out.extend(_scalars_in_event(body))
    return out


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, i


def _fields(buf: bytes):
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            n, i = _read_varint(buf, i)
            value, i = buf[i : i + n], i + n
        yield field, value


def _scalars_in_event(event: bytes) -> list[tuple[int, str, float]]:
    step, out = 0, []
    for field, value in _fields(event):
        if field == 2:
            step = value
        elif field == 5:
            for _, val in _fields(value):
                parts = dict(_fields(val))
                if 2 in parts:
                    out.append((step, parts[1].decode(), struct.unpack("<f", parts[2])[0]))
    return out
