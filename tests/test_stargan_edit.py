"""``stargan edit`` on real photos: faces are cut out as CelebA's are, and only the change goes back."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from facelab.align.transform import transform_points
from facelab.core.errors import FacelabError
from facelab.detect.registry import make_detector, make_landmarker
from facelab.io.images import read_image
from facelab.stargan.align import CELEBA_FACE, crop_matrix, measure_face_type
from facelab.stargan.config import DEFAULT_ATTRS, EditConfig
from facelab.stargan.edit import (apply_settings, edit_faces, edit_files, feathered_square, find_faces, output_paths,
                                  parse_settings)

from conftest import SHARED_DATA

CELEBA = SHARED_DATA / "celeba" / "images"
needs_celeba = pytest.mark.skipif(not CELEBA.is_dir(), reason="needs ../shared/data/celeba")


@pytest.fixture(scope="module")
def face_stack():
    return make_detector("hog"), make_landmarker("dlib68")


@pytest.fixture(scope="module")
def portrait(sample_photos) -> np.ndarray:
    """A real photo that is not CelebA-aligned: an LFW image (250x250, its own crop), else a bundled portrait."""
    lfw = SHARED_DATA / "lfw" / "images" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    return read_image(lfw) if lfw.is_file() else sample_photos["astronaut"]


@needs_celeba
def test_celeba_face_type_is_what_the_images_measure(face_stack):
    """The constants of CELEBA_FACE (measured on all 4800 images) agree with every 40th image measured again."""
    measured, found = measure_face_type(sorted(CELEBA.glob("*.jpg"))[::40], *face_stack)
    assert found >= 110  # of 120; dlib's HOG misses a few turned faces
    assert measured.padding == pytest.approx(CELEBA_FACE.padding, abs=0.01)
    assert measured.shift == pytest.approx(CELEBA_FACE.shift, abs=0.01)


@needs_celeba
def test_crop_of_a_celeba_image_is_its_own_centre_crop(face_stack):
    """Aligning an aligned CelebA image lands (within a few pixels) on the crop the generator trains on."""
    size = 128
    ideal = np.array([[size / 178, 0, 0], [0, size / 178, -20 * size / 178]])  # centre 178 square, resized
    corners = np.array([[0, 0], [178, 0], [0, 218], [178, 218]], np.float64)
    errors = []
    for path in sorted(CELEBA.glob("*.jpg"))[::200]:
        faces = find_faces(read_image(path), *face_stack, min_size=40)
        if faces:
            mat = crop_matrix(faces[0][1], size)
            errors.append(np.abs(transform_points(corners, mat) - transform_points(corners, ideal)).max())
    assert len(errors) >= 20
    assert np.median(errors) < 8 and max(errors) < 20  # 5.8 and 15.2 px of 128 here: dlib's landmark noise


class ShiftGenerator(nn.Module):
    """G(x, c) = x + 0.4 c[Blond_Hair]: a known change, so where and how much the photo changes is checkable."""

    def forward(self, x, c):
        return x + 0.4 * c[:, 1].view(-1, 1, 1, 1)


class BlankCritic(nn.Module):
    """Reads every attribute as absent."""

    def forward(self, x):
        return torch.zeros(len(x), 1, 2, 2), torch.full((len(x), 5), -3.0)


def test_edit_pastes_only_the_change_back_into_a_real_photo(portrait, face_stack):
    faces = find_faces(portrait, *face_stack, min_size=40)
    assert len(faces) == 1
    landmarks = [faces[0][1]]
    g, d = ShiftGenerator(), BlankCritic()
    out, labels = edit_faces(portrait, landmarks, g, d, DEFAULT_ATTRS, {"Blond_Hair": 1.0}, 128)
    assert labels[0][0].tolist() == [0] * 5 and labels[0][1].tolist() == [0, 1, 0, 0, 0]
    h, w = portrait.shape[:2]
    inside = cv2.warpAffine(feathered_square(128, 0.08), crop_matrix(faces[0][1], 128), (w, h),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    change = out.astype(int) - portrait.astype(int)
    core = (inside == 1) & (portrait.max(2) < 200)  # not clipped at white
    assert core.sum() > 0.2 * h * w
    assert np.abs(change[core] - 51).max() <= 1  # 0.4 in [-1, 1] units is 51 levels, everywhere in the square
    assert (change[inside == 0] == 0).all()  # outside the pasted square: bit-identical
    x0, y0, x1, y1 = (int(v) for v in faces[0][0])  # the square covers the whole detected face
    assert (inside[max(y0, 0):y1, max(x0, 0):x1] > 0.5).all()
    # a target equal to what the critic reads changes nothing
    same, _ = edit_faces(portrait, landmarks, g, d, DEFAULT_ATTRS, {"Blond_Hair": 0.0}, 128)
    assert np.array_equal(same, portrait)


def test_every_face_of_a_group_photo_is_edited(request, face_stack):
    group = SHARED_DATA / "groups" / "insightface_t1.jpg"  # also in the fetched photos, as group6_table.jpg
    photo = read_image(group if group.is_file() else request.getfixturevalue("fetched_photos") / "group6_table.jpg")
    faces = find_faces(photo, *face_stack, min_size=40)
    assert len(faces) == 6
    out, labels = edit_faces(photo, [lm for _, lm in faces], ShiftGenerator(), BlankCritic(), DEFAULT_ATTRS,
                             {"Blond_Hair": 1.0}, 128)
    assert len(labels) == 6
    for box, _ in faces:  # the centre of every face got brighter
        cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
        assert (out[cy, cx].astype(int) - photo[cy, cx]).min() >= 40 or photo[cy, cx].max() > 200


def test_settings_keep_hair_colours_exclusive():
    attrs = DEFAULT_ATTRS  # Black_Hair Blond_Hair Brown_Hair Male Young
    current = torch.tensor([[1.0, 0, 0, 1, 1], [0, 0, 1, 0, 0]])
    target = apply_settings(current, attrs, parse_settings(["Blond_Hair=1", "Male=0"], attrs))
    assert target.tolist() == [[0, 1, 0, 0, 1], [0, 1, 0, 0, 0]]
    assert apply_settings(current, attrs, {"Black_Hair": 0.0}).tolist() == [[0, 0, 0, 1, 1], [0, 0, 1, 0, 0]]
    assert current.tolist() == [[1, 0, 0, 1, 1], [0, 0, 1, 0, 0]]  # input untouched


@pytest.mark.parametrize("items, message", [
    (["Blond_Hair=1", "Black_Hair=1"], "hair colours are exclusive"),
    (["Smiling=1"], "no attribute 'Smiling'; it edits Black_Hair"),
    (["Male"], "write NAME=1 or NAME=0"),
    (["Male=yes"], "write NAME=1 or NAME=0"),
    ([], "give at least one --set"),
])
def test_bad_settings_are_refused(items, message):
    with pytest.raises(FacelabError, match=message):
        parse_settings(items, DEFAULT_ATTRS)


def test_bad_feather_and_inputs_are_refused(tmp_path):
    for feather in (0.7, 0):  # a fraction of the pasted square's side, refused when the config is made
        with pytest.raises(FacelabError, match=f"feather={feather} is out of range"):
            EditConfig(feather=feather)
    with pytest.raises(FacelabError, match="nope.jpg is not an image file or a folder"):
        edit_files([tmp_path / "nope.jpg"], tmp_path / "out", tmp_path / "x.safetensors", ["Male=1"])


def test_output_paths(tmp_path):
    a, b = Path("x/a.jpg"), Path("y/b.png")
    assert output_paths([a], tmp_path / "edited.png") == [tmp_path / "edited.png"]
    assert output_paths([a, b], tmp_path / "out") == [tmp_path / "out" / "a.jpg", tmp_path / "out" / "b.png"]
    with pytest.raises(FacelabError, match="two inputs are named a.jpg"):
        output_paths([a, Path("z/a.jpg")], tmp_path / "out")
