"""Extraction on the real footage and photos of ../shared/data: nested faces, MTCNN, group counts, no hangs.

The per-clip and per-detector tables are `benchmarks/detector_table.py` (docs/extraction.md); these tests
hold the default detector to what that table measured.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import pytest

from facelab.core.errors import FacelabError
from facelab.detect import mtcnn
from facelab.detect.registry import make_detector
from facelab.extract.config import ExtractConfig
from facelab.extract.pipeline import extract
from facelab.extract.tracking import _not_nested
from facelab.io.images import list_images
from facelab.metrics.imglab import read_boxes
from facelab.metrics.iou import matched_boxes

from conftest import REPO, SHARED_DATA

needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data (real clips and photos) is absent")
GROUPS = SHARED_DATA / "groups"
VIDEOS = SHARED_DATA / "videos"


def _faces_per_frame(folder: Path) -> Counter:
    return Counter(p.stem.split("_")[0] for p in list_images(folder))


def test_a_face_inside_a_larger_face_is_dropped():
    big, inner, beside = (100, 100, 300, 300), (150, 140, 230, 200), (320, 100, 480, 260)
    # the nested box goes wherever it comes in the list; a face beside another stays
    assert _not_nested([inner, big, beside]) == [1, 2]
    assert _not_nested([big, inner]) == [0]
    # faces that overlap a little (people standing close in a group photo) both stay
    assert _not_nested([big, (260, 120, 420, 280)]) == [0, 1]


@needs_shared
def test_no_second_face_in_the_eyes_of_a_laughing_man(tmp_path):
    """lp_d12 frames 124-136: HOG also fired on the eye region, and merge pasted that as a second patch."""
    stats = extract(VIDEOS / "lp_d12.mp4", tmp_path, ExtractConfig(fps=None))
    per_frame = _faces_per_frame(tmp_path)
    assert stats.frames == 183 and max(per_frame.values()) == 1, [k for k, n in per_frame.items() if n > 1]
    assert stats.faces >= 0.95 * stats.frames


def _pascal_boxes() -> dict[str, list]:
    """dlib_<file> -> the hand-made boxes of dlib's training and testing XML (the nine PASCAL photos)."""
    return {"dlib_" + k: v for xml in ("dlib_training.xml", "dlib_testing.xml") for k, v in read_boxes(GROUPS / xml).items()}


@needs_shared
def test_mtcnn_finds_the_small_faces_of_a_real_group_photo():
    """Six faces of 37-53 px in a PASCAL photo: MTCNN's cascade with the shipped weights finds every
    hand-made box and nothing else; its five landmarks fall inside the boxes (eyes above the mouth)."""
    image = cv2.imread(str(GROUPS / "dlib_2008_002470.jpg"))
    truth = _pascal_boxes()["dlib_2008_002470.jpg"]
    raw = mtcnn.MtcnnDetector(device="cpu").detect_raw(image)
    assert len(raw) == len(truth) == 6 and matched_boxes([tuple(r[:4]) for r in raw], truth) == 6
    for r in raw:
        xs, ys = r[5:10], r[10:15]
        assert (r[0] <= xs).all() and (xs <= r[2]).all() and (r[1] <= ys).all() and (ys <= r[3]).all()
        assert max(ys[0], ys[1]) < min(ys[3], ys[4])  # eyes above the mouth corners
    # the boxes handed to the landmarker follow dlib's HOG convention: they still match the hand-made ones
    assert matched_boxes([d.box for d in make_detector("mtcnn", device="cpu").detect(image)], truth) == 6


def test_mtcnn_without_its_wheel_says_how_to_install_it(monkeypatch):
    from facelab.core import packaged

    packaged.packaged_file.cache_clear()
    monkeypatch.setattr(packaged.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FacelabError, match="pip install --no-deps facenet-pytorch"):
        make_detector("mtcnn")
    packaged.packaged_file.cache_clear()


@needs_shared
def test_the_default_detector_finds_every_face_of_the_group_photos(tmp_path):
    """All 19 group photos in one run with --min-face-size 20 (the PASCAL faces are 37-109 px): every
    hand-made box of the nine PASCAL photos is found and nothing else, and the other ten photos give
    exactly the faces a person counts (docs/extraction.md: 100 % precision and recall)."""
    from facelab.face.metadata import read_meta

    extract(GROUPS, tmp_path, ExtractConfig(min_face_size=20))
    found: dict[str, list] = {}
    for face in list_images(tmp_path):
        found.setdefault(face.stem.rsplit("_", 1)[0], []).append(read_meta(face).source_rect)
    counted = dict(row.split("\t")[:2] for row in (GROUPS / "faces.tsv").read_text().splitlines()[1:])
    pascal = _pascal_boxes()
    for name, count in counted.items():
        boxes = found.get(Path(name).stem, [])
        if name in pascal:
            truth = pascal[name]
            assert matched_boxes(boxes, truth) == len(truth) == len(boxes), (name, len(boxes), len(truth))
        else:
            assert len(boxes) == int(count), (name, len(boxes), count)


def _run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facelab", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})


@needs_shared
@pytest.mark.slow  # 30 processes: about 2 minutes
def test_thirty_single_image_extractions_in_a_row_all_exit(tmp_path):
    """`facelab extract IMAGE` hung on exit in 2 of ~40 runs (a forked detection worker stuck on a lock)."""
    photo = GROUPS / "facerec_two_people.jpg"
    for k in range(30):
        proc = _run_cli("extract", str(photo), "-o", str(tmp_path / f"o{k}"), timeout=60)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(list_images(tmp_path / "o29")) == 2


@needs_shared
def test_worker_pools_print_no_tracebacks_when_rerun_or_stopped(tmp_path):
    """Detection workers must not inherit the CLI's SIGTERM handler: re-running extract on a finished
    faceset printed two worker tracebacks; a `kill` must leave one line, not one traceback per worker."""
    clip, out = str(VIDEOS / "lp_d18.mp4"), tmp_path / "faces"
    for _ in range(2):
        proc = _run_cli("extract", clip, "-o", str(out), "--fps", "5", "--workers", "2", timeout=120)
        assert proc.returncode == 0 and proc.stderr.count("Traceback") == 0, proc.stderr
    proc = subprocess.Popen([sys.executable, "-m", "facelab", "extract", clip, "-o", str(tmp_path / "killed"),
                             "--workers", "2"], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    deadline = time.monotonic() + 60
    while not list((tmp_path / "killed").glob("*.jpg")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    lines = [line for line in err.strip().splitlines() if not line.startswith("extract:")]  # progress lines
    assert proc.returncode == 130 and lines == ["facelab: interrupted"], err
