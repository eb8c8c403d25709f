"""``facelab faceset resize`` on real photos: the resized faceset is the one a new extraction would give."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from facelab.cli import main as cli_main
from facelab.core.errors import FacelabError
from facelab.face.metadata import read_face, write_meta
from facelab.faceset.resize import resize_faceset
from facelab.faceset.store import Faceset, pack
from facelab.io.images import write_image
from facelab.face.masks.applied import applied_mask, set_applied_mask
from facelab.face.masks.labels import label_mask, set_label

PORTRAITS = ("obama_1.jpg", "obama_3.jpg", "biden_1.jpg")


@pytest.fixture(scope="module")
def photos(fetched_photos, sample_photos, tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name in PORTRAITS:
        shutil.copy(fetched_photos / name, folder / name)
    for name, image in sample_photos.items():
        write_image(folder / f"{name}.png", image)
    return folder


def _extract(photos, out, face_type, size):
    assert cli_main(["extract", str(photos), "-o", str(out), "--face-type", face_type, "--size", str(size),
                     "--format", "png", "--workers", "1"]) == 0
    return Faceset.open(out)


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def whole(photos, tmp_path_factory):
    return _extract(photos, tmp_path_factory.mktemp("fs") / "whole256", "whole", 256)


@pytest.mark.parametrize("face_type,size", [("full", 128), ("whole", 128), ("half", 192)])
def test_resize_gives_what_a_new_extraction_gives(photos, whole, tmp_path, face_type, size):
    direct = _extract(photos, tmp_path / "direct", face_type, size)
    resized = tmp_path / "resized"
    assert cli_main(["faceset", "resize", str(whole.root), "-o", str(resized), "--size", str(size),
                     "--face-type", face_type]) == 0
    out = Faceset.open(resized)
    assert out.names == direct.names == whole.names and len(out) == 5
    for i in range(len(out)):
        a, b = out.metas[i], direct.metas[i]
        assert (a.face_type, a.size) == (face_type, size)
        np.testing.assert_allclose(a.image_to_face, b.image_to_face, atol=1e-3)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.1)  # metadata keeps 4 decimals
        assert a.source_filename == b.source_filename and a.yaw == pytest.approx(b.yaw)
        # resampled twice (source -> 256 whole -> new) against once: the same picture
        assert _psnr(out.image(i), direct.image(i)) > 35  # 38-44 dB measured for full 128


def test_labels_and_applied_masks_follow_the_face(whole, tmp_path):
    folder = tmp_path / "labelled"
    shutil.copytree(whole.root, folder)
    path = folder / whole.names[0]
    _, meta = read_face(path)
    label = np.zeros((256, 256), np.uint8)
    label[100:180, 90:170] = 1  # a square on the face (whole-face pixels)
    set_label(meta, label)
    set_applied_mask(meta, label[::2, ::2])  # stored at 128 px, a segmenter resolution below the face size
    write_meta(path, meta)
    resize_faceset(folder, tmp_path / "full", 128, "full")
    _, new = read_face(tmp_path / "full" / path.name)
    # the square's corners, mapped with the face's own alignment change, bound the new label
    old_to_new = new.image_to_face[:, :2] @ np.linalg.inv(meta.image_to_face[:, :2])
    shift = new.image_to_face[:, 2] - old_to_new @ meta.image_to_face[:, 2]
    corners = np.array([[90, 100], [169, 179]], np.float64) @ old_to_new.T + shift
    expected = np.zeros((128, 128), np.uint8)
    (x0, y0), (x1, y1) = np.round(corners).astype(int)
    expected[y0:y1 + 1, x0:x1 + 1] = 1
    for mask in (label_mask(new), applied_mask(new) >= 0.5):
        assert np.mean(mask != expected) < 0.01 and mask.sum() > 0.9 * expected.sum()


def test_packed_faceset_resizes_and_the_input_is_unchanged(whole, tmp_path):
    folder = tmp_path / "packed"
    shutil.copytree(whole.root, folder)
    pack(folder)
    before = sorted((p.name, p.stat().st_size) for p in folder.iterdir())
    assert resize_faceset(folder, tmp_path / "out", 64) == 5
    assert sorted((p.name, p.stat().st_size) for p in folder.iterdir()) == before
    out = Faceset.open(tmp_path / "out")
    assert {m.face_type for m in out.metas} == {"whole"} and out.images().shape == (5, 64, 64, 3)


def test_a_larger_face_type_or_a_used_output_is_refused(whole, tmp_path, capsys):
    with pytest.raises(FacelabError, match=r"head face reaches outside the saved whole face; re-extract"):
        resize_faceset(whole.root, tmp_path / "head", 256, "head")
    assert not (tmp_path / "head").exists()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x.txt").write_text("mine")
    assert cli_main(["faceset", "resize", str(whole.root), "-o", str(tmp_path / "used"), "--size", "64"]) != 0
    err = capsys.readouterr().err
    assert "already exists and is not an empty folder" in err and "Traceback" not in err
    assert (tmp_path / "used" / "x.txt").read_text() == "mine"


def test_faces_recropped_for_training_are_never_written_back(whole):
    from facelab.faceset.resize import recropped

    full = recropped(whole, "full", 96)
    assert {m.face_type for m in full.metas} == {"full"} and full.images().shape == (5, 96, 96, 3)
    assert recropped(full, "full", 96) is full
    with pytest.raises(FacelabError, match="cannot be saved over them"):
        full.update_metas({0: full.metas[0]})
    assert read_face(whole.root / whole.names[0])[1].face_type == "whole"
