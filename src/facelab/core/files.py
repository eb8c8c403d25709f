"""Atomic file writes (a reader, or a crash, never sees half a file; the previous version can be kept) and
the cache folder.

Every write goes to a hidden temporary file next to its target (``.NAME.XXXXXXXX.tmp.EXT``) and is renamed
over the target in one step. A process killed mid-write leaves only such a hidden file behind: listings
of data (:func:`is_hidden`) never read it, and the next run of the command that owns the folder removes
it (:func:`remove_stale_temps`). A full or read-only disk becomes one line naming the file.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from facelab.core.errors import FacelabError

log = logging.getLogger("facelab")

# errors that say "this place cannot take the write": a full or read-only disk, and no permission there
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
_FORBIDDEN_ERRNOS = {errno.EACCES, errno.EPERM}
_TEMP_NAME = re.compile(r"^\..+\.tmp(\.[A-Za-z0-9]+)?$")


def cache_root() -> Path:
    """Where facelab keeps what it can rebuild (fetched photos, embeddings): ``$FACELAB_CACHE``, default
    ``~/.cache/facelab``."""
    return Path(os.environ.get("FACELAB_CACHE", Path.home() / ".cache" / "facelab"))


def previous_path(path: Path) -> Path:
    """Where :func:`atomic_write` keeps the file it replaced (``model.safetensors`` -> ``model.prev.safetensors``)."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def is_hidden(path: Path) -> bool:
    """Hidden files (temporary files of a write in progress or killed, macOS ``._`` files) are never data."""
    return path.name.startswith(".")


def temp_files(folder: Path, name: str | None = None) -> list[Path]:
    """The temporary files :func:`atomic_path` left in ``folder`` (only those of target ``name`` if given)."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _TEMP_NAME.match(p.name) and p.is_file()]
    return [p for p in found if name is None or p.name.startswith(f".{name}.")]


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete the temporary files a killed run left in ``folder``; called by the command that owns the
    folder before it writes there, so at most one run's leftovers ever exist. Returns how many."""
    removed = 0
    for tmp in temp_files(Path(folder)):
        tmp.unlink(missing_ok=True)
        removed += 1
    if removed:
        log.info(f"removed {removed} temporary file(s) a killed run left in {folder}")
    return removed


@contextmanager
def disk_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn a full, read-only or forbidden disk while writing ``path`` into one line naming it."""
    path = Path(path)
    try:
        yield
    except OSError as exc:
        # no permission counts only where it concerns this file's folder, not an input read meanwhile
        here = exc.filename is None or Path(exc.filename).parent in (path.parent, path) or Path(exc.filename) == path.parent
        if not (exc.errno in _FULL_ERRNOS or (exc.errno in _FORBIDDEN_ERRNOS and here)):
            raise
        raise FacelabError(f"cannot write {path} ({exc.strerror}); free disk space or choose a writable folder") from None


def ensure_folder(path: str | os.PathLike, what: str) -> Path:
    """Create the output folder ``path`` (``what`` names it in the error: "model dir", "output folder")."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FacelabError(f"{what} {path} is a file, not a folder; give a folder path")
    with disk_errors(path):
        path.mkdir(parents=True, exist_ok=True)
    return path


def _keep_previous(path: Path) -> None:
    """Make ``previous_path(path)`` a copy of ``path`` while ``path`` itself stays in place: a hard link
    (a copy where links are not possible) renamed over the old previous file, so at every moment both
    names hold a complete file."""
    prev = previous_path(path)
    link = prev.with_name(f".{prev.name}.link.tmp{prev.suffix}")
    link.unlink(missing_ok=True)
    try:
        os.link(path, link)
    except OSError:
        shutil.copy2(path, link)
    os.replace(link, prev)


@contextmanager
def atomic_path(path: str | os.PathLike, keep_previous: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it over ``path`` in one rename.

    The temporary name ends in ``path``'s own extension, so writers that pick the format from the
    name (video muxers, image encoders) write the right one.

    With ``keep_previous`` the file being replaced is first linked to :func:`previous_path`, so the
    last good version survives even if the new one later turns out to be bad; ``path`` never goes
    missing, not even for a moment.
    """
    path = Path(path)
    with disk_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        with disk_errors(path):
            yield tmp_path
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            if keep_previous and path.exists():
                _keep_previous(path)
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, keep_previous: bool = False) -> None:
    with atomic_path(path, keep_previous) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str, keep_previous: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), keep_previous)
