"""DeepFaceLab's faceset sorts on small facesets made from two real faces: each variant is a real aligned face
changed in one known way (smeared, darkened, tinted, cut by the frame, ...), so the order a person would give
is known."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab.cli import main
from facelab.extract.config import ExtractConfig
from facelab.extract.pipeline import extract
from facelab.face.metadata import read_face, write_face
from facelab.faceset.ops import SORT_ALIASES, SORT_KEYS, SORTS, sort_key, sort_order
from facelab.faceset.store import Faceset
from facelab.io.images import write_image
from facelab.merge.postprocess import motion_kernel


@pytest.fixture(scope="module")
def real_faces(sample_photos, tmp_path_factory) -> dict[str, tuple[np.ndarray, object]]:
    """The two bundled portraits' faces, aligned at 128 px: name -> (image, metadata)."""
    root = tmp_path_factory.mktemp("sort_photos")
    for name, photo in sample_photos.items():
        write_image(root / "photos" / f"{name}.png", photo)
    extract(root / "photos", root / "aligned", ExtractConfig(size=128, format="png"))
    return {path.stem.split("_")[0]: read_face(path) for path in sorted((root / "aligned").glob("*.png"))}


def _faceset(folder: Path, faces: dict[str, tuple[np.ndarray, object]]) -> Faceset:
    """Write ``label -> (image, metadata)`` as a faceset (in a shuffled file order) and open it."""
    folder.mkdir()
    labels = list(faces)
    for k, label in enumerate(np.random.default_rng(1).permutation(labels)):
        image, meta = faces[label]
        write_face(folder / f"{k:02d}_{label}.png", image, meta)
    return Faceset.open(folder)


def _labels(faceset: Faceset, order: list[int]) -> list[str]:
    return [faceset.names[i].split("_", 1)[1].removesuffix(".png") for i in order]


def _smeared(image: np.ndarray, length: float, angle: float) -> np.ndarray:
    kernel = motion_kernel(length * np.array([np.cos(angle), np.sin(angle)]))
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REPLICATE)


def test_every_sort_is_one_table_line_and_deepfacelabs_names_map_to_them():
    assert set(SORT_KEYS) == set(SORTS) | {"best"}
    assert {"motion-blur", "brightness", "hue", "black-pixels", "histogram-dissimilarity", "one-face-per-frame",
            "pixel-difference"} <= set(SORTS)
    assert all(sort_key(old) == new and new in SORT_KEYS for old, new in SORT_ALIASES.items())


@pytest.mark.parametrize("person", ["hopper", "astronaut"])
def test_motion_blur_sort_puts_the_longest_smear_last_whatever_its_direction(real_faces, tmp_path, person):
    """Smears of 3, 6, 10 and 16 px, each in another direction, come after the sharp face in that order; a
    sharp face at half the contrast is no smear (the measure is a ratio, contrast cancels)."""
    image, meta = real_faces[person]
    low = np.clip((image.astype(np.float32) - 128) * 0.5 + 128, 0, 255).astype(np.uint8)
    faces = {"sharp": (image, meta), "low-contrast": (low, meta)}
    for length, angle in ((3, 0.0), (6, np.pi / 2), (10, np.pi / 4), (16, 2.0)):
        faces[f"smear{length:02d}"] = (_smeared(image, length, angle), meta)
    fs = _faceset(tmp_path / "faces", faces)
    labels = _labels(fs, sort_order(fs, "motion-blur"))
    assert labels[2:] == ["smear03", "smear06", "smear10", "smear16"], labels
    assert set(labels[:2]) == {"sharp", "low-contrast"}


def test_brightness_sort_puts_the_brightest_face_first(real_faces, tmp_path):
    image, meta = real_faces["hopper"]
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.float32)
    faces = {}
    for gain in (0.5, 0.75, 1.0, 1.2):
        lit = hsv.copy()
        lit[..., 2] = np.clip(lit[..., 2] * gain, 0, 255)
        faces[f"v{gain:.2f}"] = (cv2.cvtColor(lit.astype(np.uint8), cv2.COLOR_HSV2BGR), meta)
    fs = _faceset(tmp_path / "faces", faces)
    assert _labels(fs, sort_order(fs, "brightness")) == ["v1.20", "v1.00", "v0.75", "v0.50"]


def test_hue_sort_orders_a_colour_cast_through_the_reds(real_faces, tmp_path):
    """Skin hues sit either side of hue 0 (red): the cast is measured as an angle from the faceset's mean hue, so
    faces tinted towards magenta (hue below 0, i.e. near 180) and towards yellow sort as one sequence."""
    image, meta = real_faces["hopper"]
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    faces = {}
    for shift in (-12, -6, 0, 6, 12):  # OpenCV hue units (2 degrees)
        tinted = hsv.copy()
        tinted[..., 0] = (tinted[..., 0].astype(int) + shift) % 180
        faces[f"h{shift:+03d}"] = (cv2.cvtColor(tinted, cv2.COLOR_HSV2BGR), meta)
    fs = _faceset(tmp_path / "faces", faces)
    assert _labels(fs, sort_order(fs, "hue")) == ["h+12", "h+06", "h+00", "h-06", "h-12"]


def test_black_pixels_sort_counts_black_bars_and_the_part_outside_the_source_frame(real_faces, tmp_path):
    image, meta = real_faces["astronaut"]
    barred = {}
    for rows in (10, 40):
        b = image.copy()
        b[:rows] = 0
        barred[f"bar{rows}"] = (b, meta)
    # the same pixels, but the metadata says the source frame ended 30 % into the face (extraction then repeats
    # the frame's edge there instead of leaving black)
    edge = np.asarray(meta.source_landmarks)[:, 0].min() + 0.3 * np.ptp(np.asarray(meta.source_landmarks)[:, 0])
    cut = dataclasses.replace(meta, source_size=(int(edge), meta.source_size[1]))
    fs = _faceset(tmp_path / "faces", {"whole": (image, meta), **barred, "cut": (image, cut)})
    assert _labels(fs, sort_order(fs, "black-pixels")) == ["whole", "bar10", "bar40", "cut"]


def test_histogram_dissimilarity_puts_the_odd_face_first(real_faces, tmp_path):
    """Five frames of one face under slightly different light and noise, and one of another person in other
    light: that one leads."""
    image, meta = real_faces["hopper"]
    rng = np.random.default_rng(0)
    faces = {f"same{k}": (np.clip(image.astype(np.float32) * (0.97 + 0.015 * k) + rng.normal(0, 2, image.shape),
                                  0, 255).astype(np.uint8), meta) for k in range(5)}
    other, other_meta = real_faces["astronaut"]
    fs = _faceset(tmp_path / "faces", {**faces, "other": (other, other_meta)})
    assert _labels(fs, sort_order(fs, "histogram-dissimilarity"))[0] == "other"


def test_pixel_difference_puts_near_copies_next_to_each_other(real_faces, tmp_path):
    rng = np.random.default_rng(2)
    faces = {}
    for person in ("hopper", "astronaut"):
        image, meta = real_faces[person]
        for k in range(3):
            noisy = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
            faces[f"{person}{k}"] = (np.roll(noisy, k, axis=1), meta)
    fs = _faceset(tmp_path / "faces", faces)
    people = [label[:-1] for label in _labels(fs, sort_order(fs, "pixel-difference"))]
    assert people in (["hopper"] * 3 + ["astronaut"] * 3, ["astronaut"] * 3 + ["hopper"] * 3), people


def test_one_face_per_frame_keeps_only_the_faces_of_frames_with_one(real_faces, tmp_path, capsys):
    """DeepFaceLab's "one face in image": the faces of a frame with two faces go to FOLDER_trash (both: which one
    is the person is what the user checks there), frames with one face keep it, in the order they had."""
    (h, hm), (a, am) = real_faces["hopper"], real_faces["astronaut"]
    frame = lambda meta, number, index=0: dataclasses.replace(meta, source_filename="clip.mp4", source_frame=number,
                                                               face_index=index)
    faces = {"f1": (h, frame(hm, 1)), "f2a": (h, frame(hm, 2)), "f2b": (a, frame(am, 2, 1)), "f3": (a, frame(am, 3))}
    fs = _faceset(tmp_path / "faces", faces)
    assert sorted(_labels(fs, sort_order(fs, "one-face-per-frame"))) == ["f1", "f3"]
    assert main(["faceset", "sort", str(tmp_path / "faces"), "--by", "oneface"]) == 0  # DeepFaceLab's name
    assert "sorted 2 faces by one-face-per-frame" in capsys.readouterr().out
    trash = sorted(p.name.split("_", 1)[1] for p in (tmp_path / "faces_trash").iterdir())
    assert trash == ["f2a.png", "f2b.png"]
    assert sorted(p.name.split("__", 1)[1].split("_", 1)[1] for p in (tmp_path / "faces").glob("*.png")) == \
        ["f1.png", "f3.png"]
