"""Atomic file writes (a reader, or a crash, never sees half a file; the previous version can be kept) and the cache folder."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def cache_root() -> Path:
    """Where facelab keeps what it can rebuild (fetched photos, embeddings): ``$FACELAB_CACHE``, default
    ``~/.cache/facelab``."""
    return Path(os.environ.get("FACELAB_CACHE", Path.home() / ".cache" / "facelab"))


def previous_path(path: Path) -> Path:
    """Where :func:`atomic_write` keeps the file it replaced (``model.safetensors`` -> ``model.prev.safetensors``)."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike, keep_previous: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it over ``path`` in one rename.

    The temporary name ends in ``path``'s own extension, so writers that pick the format from the
    name (video muxers, image encoders) write the right one.

    With ``keep_previous`` the file being replaced is first renamed to :func:`previous_path`, so the
    last good version survives even if the new one later turns out to be bad.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        if keep_previous and path.exists():
            os.replace(path, previous_path(path))
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, keep_previous: bool = False) -> None:
    with atomic_path(path, keep_previous) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str, keep_previous: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), keep_previous)
