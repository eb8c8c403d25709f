"""A faceset on disk: a folder of aligned face images, or the same packed into one ``faceset.pak``.

Training, merge and the faceset commands all open facesets through :class:`Faceset`, which reads every
file once, keeps the encoded bytes in memory and decodes on demand (encoded faces are ~10x smaller).

A folder is either packed or loose, never both: one holding ``faceset.pak`` and loose faces is refused
by every command except ``faceset unpack``, which turns it into a loose folder and keeps every face
(where a loose face differs from the pack's copy of the same name, the loose one stays and the pack's
copy goes to ``FOLDER_pak_copies``). Hidden files (a killed write's temporary files) are never faces.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from facelab.core.errors import FacelabError
from facelab.core.files import atomic_path, atomic_write_bytes, is_hidden, remove_stale_temps
from facelab.face.metadata import FaceMeta, embed_meta, meta_from_bytes, require_meta
from facelab.io.images import decode_image, is_image_file

PACK_NAME = "faceset.pak"
SORT_JOURNAL = ".sort_journal.json"  # renames of a `faceset sort` in progress (faceset.ops)
PAK_COPIES = "_pak_copies"  # suffix of the folder where unpack keeps pack copies that differ from loose faces
_PACK_MAGIC = b"FLPAK001"


class Faceset:
    def __init__(self, names: list[str], blobs: list[bytes], metas: list[FaceMeta], root: Path, packed: bool = False,
                 derived: bool = False):
        self.names, self.blobs, self.metas, self.root, self.packed = names, blobs, metas, root, packed
        self.derived = derived  # faces made in memory from the files in root (e.g. re-cropped): never written back

    @classmethod
    def open(cls, folder: str | Path) -> "Faceset":
        """Open a faceset folder (loose images or ``faceset.pak``); every face must carry metadata."""
        folder = Path(folder)
        if not folder.exists():
            raise FacelabError(f"faceset folder {folder} not found; run `facelab extract` first")
        if not folder.is_dir():
            raise FacelabError(f"{folder} is not a folder; a faceset is a folder of aligned faces")
        if (folder / SORT_JOURNAL).is_file():
            raise FacelabError(f"{folder} holds faces renamed by an interrupted `facelab faceset sort`; run "
                               f"`facelab faceset sort {folder} --by source` (any --by) to finish the renames first")
        packed = (folder / PACK_NAME).is_file()
        files = loose_faces(folder)
        if packed and files:
            raise FacelabError(f"{folder} holds both {PACK_NAME} and {len(files)} loose faces (e.g. {files[0].name}); "
                               f"run `facelab faceset unpack {folder}` to merge them into one loose faceset")
        if packed:
            names, blobs = _read_pack(folder / PACK_NAME)
        else:
            names, blobs = [p.name for p in files], [p.read_bytes() for p in files]
        if not names:
            raise FacelabError(f"faceset folder {folder} holds no face images; run `facelab extract` into it")
        metas = [require_meta(meta_from_bytes(b, str(folder / n)), folder / n) for n, b in zip(names, blobs)]
        return cls(names, blobs, metas, folder, packed)

    def __len__(self) -> int:
        return len(self.names)

    def image(self, i: int) -> np.ndarray:
        return decode_image(self.blobs[i], str(self.root / self.names[i]))

    def images(self, size: int | None = None, indices: Iterable[int] | None = None) -> np.ndarray:
        """All faces (or those at ``indices``) as one ``(N, size, size, 3)`` uint8 array (resized where a
        face has another size)."""
        out = []
        for i in range(len(self)) if indices is None else indices:
            img = self.image(i)
            if size is not None and img.shape[0] != size:
                img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_CUBIC)
            out.append(img)
        return np.stack(out)

    def require_face_type(self, face_type: str, user: str) -> None:
        """Refuse a faceset holding faces of another face type, naming the first one (``user`` says who
        needs ``face_type``, e.g. "the model trains on")."""
        for name, meta in zip(self.names, self.metas):
            if meta.face_type != face_type:
                raise FacelabError(f"{self.root / name} is a {meta.face_type} face but {user} {face_type} faces; "
                                   f"re-extract with --face-type {face_type}")

    def update_metas(self, changed: dict[int, FaceMeta]) -> None:
        """Store new metadata for the faces in ``changed`` without re-encoding their pixels (see
        :meth:`replace_faces`)."""
        faces = {}
        for i, meta in changed.items():
            try:
                faces[i] = (embed_meta(self.blobs[i], meta), meta)
            except FacelabError as exc:
                raise FacelabError(f"{self.root / self.names[i]}: {exc}") from None
        self.replace_faces(faces)

    def replace_faces(self, changed: dict[int, tuple[bytes, FaceMeta]]) -> None:
        """Store new encoded faces (file bytes with their metadata embedded, and that metadata) for the faces
        in ``changed``: each loose file is replaced atomically, a pack is rewritten once (atomically); the
        faceset in memory follows."""
        if self.derived:
            raise FacelabError(f"the faces of {self.root} in memory were derived from its files and cannot be saved over them")
        for i, (blob, meta) in changed.items():
            self.blobs[i], self.metas[i] = blob, meta
            if not self.packed:
                atomic_write_bytes(self.root / self.names[i], blob)
        if self.packed and changed:
            _write_pack(self.root / PACK_NAME, self.names, self.blobs)

    def landmarks(self, size: int | None = None) -> np.ndarray:
        """Aligned landmarks ``(N, 68, 2)``, scaled to ``size`` if given."""
        lms = np.stack([m.landmarks for m in self.metas]).astype(np.float32)
        if size is not None:
            lms *= np.array([size / m.size for m in self.metas], np.float32)[:, None, None]
        return lms


def loose_faces(folder: Path) -> list[Path]:
    """The face image files of a folder, sorted; hidden files are left out (see the module doc)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p) and not is_hidden(p))


def _plain_name(name) -> bool:
    """A pack member must be a visible image file name without any folder part: a crafted ``../x`` or
    ``/etc/x`` would otherwise be written outside the faceset by unpack."""
    return (isinstance(name, str) and name == Path(name).name and "\\" not in name and "\0" not in name
            and not name.startswith(".") and is_image_file(Path(name)))


def _read_pack(path: Path) -> tuple[list[str], list[bytes]]:
    """Names and bytes of every member; anything but a well-formed pack is refused before use."""
    data = path.read_bytes()
    if not data.startswith(_PACK_MAGIC):
        raise FacelabError(f"{path} is not a facelab faceset pack; delete it or run `facelab faceset unpack`")
    damaged = f"{path} is damaged ({{}}); restore it or re-extract the faceset"
    if len(data) < 16:
        raise FacelabError(damaged.format("it ends before its index"))
    (index_len,) = struct.unpack("<Q", data[8:16])
    base = 16 + index_len
    try:
        index = json.loads(data[16:base]) if base <= len(data) else None
    except ValueError:
        index = None
    if not isinstance(index, list) or not all(
            isinstance(e, list) and len(e) == 3 and all(type(v) is int and v >= 0 for v in e[1:]) for e in index):
        raise FacelabError(damaged.format("index unreadable"))
    names, blobs = [], []
    for name, offset, length in index:
        if not _plain_name(name):
            raise FacelabError(f"{path} names a member {name!r} that is not a plain image file name; the pack is "
                               "damaged or crafted: nothing was read from it, delete it")
        if base + offset + length > len(data):
            raise FacelabError(f"{path} is truncated at {name}; restore it or re-extract the faceset")
        names.append(name)
        blobs.append(data[base + offset : base + offset + length])
    if len(set(names)) != len(names):
        raise FacelabError(damaged.format("a member name occurs twice"))
    return names, blobs


def _write_pack(path: Path, names: list[str], blobs: list[bytes]) -> None:
    index, offset = [], 0
    for name, blob in zip(names, blobs):
        index.append([name, offset, len(blob)])
        offset += len(blob)
    header = json.dumps(index).encode()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(_PACK_MAGIC + struct.pack("<Q", len(header)) + header)
            for blob in blobs:
                fh.write(blob)


def pack(folder: str | Path) -> Path:
    """Pack a folder's faces into ``faceset.pak`` and remove the loose files (DeepFaceLab's pack)."""
    folder = Path(folder)
    faceset = Faceset.open(folder)
    if faceset.packed:
        raise FacelabError(f"{folder} is already packed ({PACK_NAME})")
    remove_stale_temps(folder)
    _write_pack(folder / PACK_NAME, faceset.names, faceset.blobs)
    for name in faceset.names:
        (folder / name).unlink(missing_ok=True)
    return folder / PACK_NAME


def unpack(folder: str | Path) -> tuple[int, Path | None]:
    """Write the faces of ``faceset.pak`` back as loose files and remove the pack; returns the count and
    the folder of pack copies kept aside because a loose face of that name differs (None if none did).

    Every member name is checked before anything is written; a loose face already there is never
    overwritten, so a rerun after an interruption only writes what is missing.
    """
    folder = Path(folder)
    pak = folder / PACK_NAME
    if not pak.is_file():
        raise FacelabError(f"{folder} has no {PACK_NAME} to unpack")
    names, blobs = _read_pack(pak)
    remove_stale_temps(folder)
    aside = folder.with_name(folder.name + PAK_COPIES)
    kept_aside = False
    for name, blob in zip(names, blobs):
        target = folder / name
        if not target.exists():
            atomic_write_bytes(target, blob)
        elif target.read_bytes() != blob:
            atomic_write_bytes(aside / name, blob)
            kept_aside = True
    pak.unlink()
    return len(names), aside if kept_aside else None
