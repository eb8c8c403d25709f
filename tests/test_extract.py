"""Extraction on real faces: detection rate, alignment accuracy, inverse mapping, tracking, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from facelab.align.face_types import ALIGN_POINTS, face_type
from facelab.align.pose import estimate_pose
from facelab.align.transform import warp_to_face, warp_to_image
from facelab.cli import main
from facelab.core.errors import FacelabError
from facelab.detect.registry import make_detector, make_landmarker
from facelab.extract.config import ExtractConfig
from facelab.extract.pipeline import STATE_NAME, extract
from facelab.extract.tracking import FaceTracker
from facelab.face.metadata import read_face, write_face
from facelab.faceset.ops import find_duplicates
from facelab.faceset.store import Faceset
from facelab.io.images import list_images
from facelab.face.masks.hull import hull_mask

from conftest import REPO


@pytest.fixture(scope="session")
def extracted(sample_clips, tmp_path_factory):
    """Each sample clip extracted at the default face type (whole), 256 px."""
    out = {}
    for clip in sample_clips[:2]:
        folder = tmp_path_factory.mktemp("aligned") / clip.stem
        out[clip] = (folder, extract(clip, folder, ExtractConfig(workers=2)))
    return out


def test_single_person_clips_give_one_face_per_frame(extracted):
    for clip, (folder, stats) in extracted.items():
        faceset = Faceset.open(folder)
        per_frame = {}
        for m in faceset.metas:
            per_frame[m.source_frame] = per_frame.get(m.source_frame, 0) + 1
        exactly_one = sum(1 for n in per_frame.values() if n == 1)
        assert stats.frames >= 25
        assert exactly_one >= 0.95 * stats.frames, f"{clip.name}: {exactly_one}/{stats.frames} frames with one face"


def test_aligned_landmarks_sit_on_the_template(extracted):
    for folder, _ in extracted.values():
        faceset = Faceset.open(folder)
        template = face_type("whole").template(256)
        errors = np.array([np.linalg.norm(m.landmarks[ALIGN_POINTS] - template, axis=1).mean() for m in faceset.metas])
        assert errors.mean() < 6.0 and errors.max() < 10.0, f"landmark error mean {errors.mean():.2f}px max {errors.max():.2f}px"


def test_inverse_transform_reproduces_the_source_face(extracted, sample_clips):
    from facelab.io.video import iter_frames

    folder, _ = extracted[sample_clips[0]]
    face, meta = read_face(sorted(folder.iterdir())[10])
    frame = next(img for i, img in iter_frames(sample_clips[0]) if i == meta.source_frame)
    h, w = frame.shape[:2]
    back = warp_to_image(face, meta.image_to_face, w, h)
    region = cv2.erode(hull_mask(meta.source_landmarks, h, w, "full"), np.ones((9, 9), np.uint8)) > 0
    mse = np.mean((back[region].astype(np.float64) - frame[region].astype(np.float64)) ** 2)
    psnr = 10 * np.log10(255.0**2 / mse)
    assert psnr >= 30.0, f"PSNR {psnr:.1f} dB"


def test_a_plain_shrink_is_exactly_an_area_resize(sample_photos):
    image = sample_photos["hopper"][:256, :256]
    half = np.array([[0.5, 0, -0.25], [0, 0.5, -0.25]])  # pixel centres: a -> (a + 0.5) / 2 - 0.5
    np.testing.assert_array_equal(warp_to_face(image, half, 128), cv2.resize(image, (128, 128), interpolation=cv2.INTER_AREA))
    assert np.abs(warp_to_face(image, np.array([[1.0, 0, -20], [0, 1, -30]]), 64) - image[30:94, 20:84]).max() == 0


def test_faces_smaller_than_in_the_photo_do_not_alias(fetched_photos):
    """A 1137 px photo cut to a 128 px face: against an alias-free crop (4x supersampled, then area
    averaged) the face is far closer than a plain cubic warp of the photo would be."""
    from facelab.align.transform import align_matrix, compose
    from facelab.io.images import read_image

    photo = read_image(fetched_photos / "obama_1.jpg")
    landmarks = make_landmarker("dlib68").landmarks(photo, make_detector("hog").detect(photo)[0].box)
    mat = align_matrix(landmarks, 128, "whole")
    to_big = np.array([[4, 0, 1.5], [0, 4, 1.5]])  # pixel a of the face -> pixels 4a .. 4a + 3 of a 4x one
    big = cv2.warpAffine(photo, compose(to_big, mat), (512, 512), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    reference = cv2.resize(big, (128, 128), interpolation=cv2.INTER_AREA).astype(np.float64)
    plain = cv2.warpAffine(photo, mat, (128, 128), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)

    def psnr(x):
        return 10 * np.log10(255.0**2 / np.mean((x.astype(np.float64) - reference) ** 2))

    assert psnr(plain) < 34 and psnr(warp_to_face(photo, mat, 128)) > psnr(plain) + 8  # measured: 32.6 -> 44.3 dB


def test_group_photos_give_every_face_and_keep_who_is_who(fetched_photos, tmp_path):
    """Three real group photos (6, 5 and 2 people; Thomas Middleditch is in two of them) and an RGBA
    portrait: every person is extracted once, and the aligned faces still say who is who."""
    from facelab.detect.dlib_models import DlibEmbedder
    from facelab.samples.photos import GROUP_FACES, KNOWN_PEOPLE

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in [*GROUP_FACES, "obama_2_rgba.png"]:
        shutil.copy(fetched_photos / name, photos / name)
    stats = extract(photos, tmp_path / "out", ExtractConfig(workers=1))
    faces = [read_face(p) for p in list_images(tmp_path / "out")]
    per_photo = {}
    for img, meta in faces:
        per_photo.setdefault(meta.source_filename, []).append((meta.source_rect[0], img, meta))
    assert {k: len(v) for k, v in per_photo.items()} == {**GROUP_FACES, "obama_2_rgba.png": 1} and stats.faces == 14
    embedder, names, vectors = DlibEmbedder(), [], []
    for photo, found in per_photo.items():
        for k, (_, img, meta) in enumerate(sorted(found, key=lambda f: f[0])):  # left to right
            names.append(KNOWN_PEOPLE.get((photo, k), f"{photo}_{k}"))
            vectors.append(embedder.embed(img, meta.landmarks))
    v = np.array(vectors) / np.linalg.norm(vectors, axis=1, keepdims=True)
    cos = v @ v.T
    same = np.array(names)[:, None] == np.array(names)[None]
    off_diag = ~np.eye(len(names), dtype=bool)
    assert same[off_diag].sum() == 2  # the one person in two photos
    assert cos[same & off_diag].min() > cos[~same].max() + 0.02, (cos[same & off_diag], cos[~same].max())
    # --max-faces keeps the largest faces of the frame
    extract(photos / "group6_table.jpg", tmp_path / "two", ExtractConfig(workers=1, max_faces=2))
    kept = sorted(read_face(p)[1].source_rect[2] - read_face(p)[1].source_rect[0] for p in list_images(tmp_path / "two"))
    widths = sorted(m.source_rect[2] - m.source_rect[0] for _, m in (f[1:] for f in per_photo["group6_table.jpg"]))
    assert kept == pytest.approx(widths[-2:], abs=1.0)


def test_keep_one_person_and_sort_by_identity(fetched_photos, tmp_path):
    """16 real faces of 14 people: `faceset sort --by identity` puts each person's two faces (Obama's two
    photos, Middleditch in two group photos) next to each other, and `faceset keep --like` Obama's third
    photo (given as a photo folder) keeps exactly his two faces, moving the other 14 aside."""
    from facelab.samples.photos import KNOWN_PEOPLE

    photos, ref = tmp_path / "photos", tmp_path / "ref"
    photos.mkdir()
    ref.mkdir()
    for name in ("obama_2.jpg", "obama_3.jpg", "biden_1.jpg", "group6_table.jpg", "group5_cast.jpg", "group2_pair.jpg"):
        shutil.copy(fetched_photos / name, photos / name)
    shutil.copy(fetched_photos / "obama_1.jpg", ref / "obama_1.jpg")
    faces = tmp_path / "faces"
    assert extract(photos, faces, ExtractConfig(workers=1)).faces == 16

    def who() -> dict[str, str]:
        """face file -> person (KNOWN_PEOPLE, else photo and left-to-right index)"""
        found = [(p.name, read_face(p)[1]) for p in list_images(faces)]
        out = {}
        for photo in {m.source_filename for _, m in found}:
            row = sorted((m.source_rect[0], name) for name, m in found if m.source_filename == photo)
            out.update({name: KNOWN_PEOPLE.get((photo, k), f"{photo}_{k}") for k, (_, name) in enumerate(row)})
        return out

    assert main(["faceset", "sort", str(faces), "--by", "identity"]) == 0
    people = [person for _, person in sorted(who().items())]  # files are NNNNN__ in sorted order
    for person in ("obama", "middleditch"):
        at = [k for k, p in enumerate(people) if p == person]
        assert len(at) == 2 and at[1] - at[0] == 1, (person, people)
    assert main(["faceset", "keep", str(faces), "--like", str(ref)]) == 0  # photos: extracted on the way
    assert sorted(who().values()) == ["obama", "obama"]
    assert len(list_images(tmp_path / "faces_others")) == 14


def test_faceset_of_uses_aligned_folders_and_extracts_the_rest(extracted, sample_clips, tmp_path):
    from facelab.extract.pipeline import faceset_of

    folder, _ = extracted[sample_clips[0]]  # whole faces
    assert faceset_of(folder, tmp_path / "unused") == folder and faceset_of(folder, tmp_path / "u", "whole") == folder
    assert not (tmp_path / "unused").exists()
    with pytest.raises(FacelabError, match="holds whole faces but the model needs full"):
        faceset_of(folder, tmp_path / "x", "full")
    with pytest.raises(FacelabError, match="not found"):
        faceset_of(tmp_path / "nothing.mp4", tmp_path / "y")


def test_tracking_refinds_a_face_the_detector_missed(sample_clips):
    from facelab.io.video import iter_frames

    frames = [img for _, (i, img) in zip(range(6), iter_frames(sample_clips[0]))]
    detector, landmarker = make_detector("hog"), make_landmarker("dlib68")
    tracker = FaceTracker(landmarker)
    tracker.update(frames[0], detector.detect(frames[0]))
    for k in (1, 2, 3):  # pretend the detector missed the face in three frames running
        kept = tracker.update(frames[k], [])
        assert len(kept) == 1 and kept[0].redetected
        truth = landmarker.landmarks(frames[k], detector.detect(frames[k])[0].box)
        assert np.abs(kept[0].landmarks - truth).mean() < 4.0
    blank = np.full_like(frames[4], 90)
    assert tracker.update(blank, []) == []  # a face that is gone is not invented
    tracker_off = FaceTracker(landmarker, max_missed=0)
    tracker_off.update(frames[0], detector.detect(frames[0]))
    assert tracker_off.update(frames[1], []) == []


def test_pose_yaw_flips_with_the_image(sample_photos):
    img = sample_photos["hopper"]
    det, lm = make_detector("hog"), make_landmarker("dlib68")
    h, w = img.shape[:2]
    pts = lm.landmarks(img, det.detect(img)[0].box)
    mirrored = img[:, ::-1].copy()
    pts_m = lm.landmarks(mirrored, det.detect(mirrored)[0].box)
    yaw, pitch, _ = estimate_pose(pts, w, h)
    yaw_m, pitch_m, _ = estimate_pose(pts_m, w, h)
    assert abs(yaw + yaw_m) < 6.0 and abs(pitch - pitch_m) < 6.0


def test_metadata_survives_copy_and_resave_is_detected(extracted, sample_clips, tmp_path, capsys):
    folder, stats = extracted[sample_clips[1]]
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert len(Faceset.open(copy)) == stats.faces
    for args in (["info", str(copy)], ["sort", str(copy), "--by", "blur"], ["sort", str(copy), "--by", "histogram"],
                 ["sort", str(copy), "--by", "best", "--best-count", "10"], ["dedupe", str(copy)],
                 ["pack", str(copy)], ["info", str(copy)], ["resize", str(copy), "-o", str(tmp_path / "small"),
                 "--size", "96", "--face-type", "full"], ["unpack", str(copy)], ["info", str(copy)],
                 ["info", str(tmp_path / "small")]):
        assert main(["faceset", *args]) == 0, args
    first = sorted(p for p in copy.iterdir() if p.suffix == ".jpg")[0]
    cv2.imwrite(str(first), cv2.imread(str(first)))  # an editor re-save drops the metadata
    capsys.readouterr()
    assert main(["faceset", "info", str(copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and first.name in err and "re-extract" in err


def test_dedupe_keeps_the_sharper_of_two_copies(extracted, sample_clips, tmp_path):
    folder = tmp_path / "two_people"
    folder.mkdir()
    for clip in sample_clips[:2]:  # one face of each person: different faces are never duplicates
        first = sorted(p for p in extracted[clip][0].iterdir() if p.suffix == ".jpg")[0]
        shutil.copy(first, folder / f"{clip.stem}_{first.name}")
    img, meta = read_face(folder / f"{clip.stem}_{first.name}")
    blurred = folder / f"zz_{clip.stem}.jpg"  # same metadata, blurred pixels: a near-copy, less sharp
    write_face(blurred, cv2.GaussianBlur(img, (0, 0), 1.0), meta)
    faceset = Faceset.open(folder)
    assert [faceset.names[i] for i in find_duplicates(faceset)] == [blurred.name]


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "facelab", *args], capture_output=True, text=True, timeout=120, env=env)


def _assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("facelab: error:"), proc.stderr
    for word in words:
        assert word in lines[0]


@pytest.mark.slow  # six CLI processes, about 30 s (tests/test_bad_input.py covers extract in the default run)
def test_bad_inputs_give_one_line_errors(sample_clips, tmp_path):
    _assert_one_line_error(_run_cli("extract", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "o")), "missing.mp4")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    _assert_one_line_error(_run_cli("extract", str(text), "-o", str(tmp_path / "o")), "notes.mp4")
    truncated = tmp_path / "cut.mp4"
    data = sample_clips[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    _assert_one_line_error(_run_cli("extract", str(truncated), "-o", str(tmp_path / "o")), "cut.mp4")
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_one_line_error(_run_cli("extract", str(empty), "-o", str(tmp_path / "o")), "empty")
    _assert_one_line_error(_run_cli("frames", str(text), "-o", str(tmp_path / "f")), "notes.mp4")
    clip = str(sample_clips[0])
    _assert_one_line_error(_run_cli("extract", clip, "-o", str(tmp_path / "o"), "--detector", "s3fd"), "--detector-weights")
    _assert_one_line_error(_run_cli("extract", clip, "-o", str(tmp_path / "o"), "--detector", "s3fd",
                                    "--detector-weights", str(text)), "notes.mp4")
    _assert_one_line_error(_run_cli("extract", clip, "-o", str(tmp_path / "o"), "--face-type", "torso"), "torso")


def test_image_modes_are_converted_and_faceless_frames_counted(sample_photos, tmp_path):
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    face = sample_photos["hopper"]
    gray = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(src / "gray.png"), gray)
    cv2.imwrite(str(src / "deep16.png"), face.astype(np.uint16) * 257)
    cv2.imwrite(str(src / "alpha.png"), np.dstack([face, np.full(face.shape[:2], 255, np.uint8)]))
    Image.fromarray(face[:, :, ::-1]).convert("CMYK").save(src / "cmyk.jpg")
    cv2.imwrite(str(src / "blank.png"), np.full((300, 300, 3), 128, np.uint8))
    stats = extract(src, tmp_path / "out", ExtractConfig(workers=1))
    assert stats.frames == 5 and stats.faces == 4 and stats.no_face == ["blank.png"]
    assert {p.name.split("_")[0] for p in (tmp_path / "out").glob("*.jpg")} == {"gray", "deep16", "alpha", "cmyk"}


def test_extraction_resumes_where_it_stopped(sample_photos, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i, img in enumerate(sample_photos.values()):
        cv2.imwrite(str(src / f"{i:05d}.png"), img)
    first = extract(src, tmp_path / "out", ExtractConfig(workers=1))
    assert first.frames == 2 and first.resumed == 0
    again = extract(src, tmp_path / "out", ExtractConfig(workers=1))
    assert again.resumed == 2 and again.frames == 2 and again.faces == first.faces
    # a run killed after the first frame: the state names one frame, only the other is processed
    state_path = tmp_path / "out" / STATE_NAME
    state = json.loads(state_path.read_text())
    state.update(done=["00000"], frames=1, faces=1)
    state_path.write_text(json.dumps(state))
    (tmp_path / "out" / "00001_0.jpg").unlink()
    partial = extract(src, tmp_path / "out", ExtractConfig(workers=1))
    assert partial.resumed == 1 and partial.frames == 2 and (tmp_path / "out" / "00001_0.jpg").is_file()
