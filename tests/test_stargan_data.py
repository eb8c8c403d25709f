"""CelebA attribute file parsing and preprocessing: every bad input is one error naming the line."""

from __future__ import annotations

import numpy as np
import pytest

from facelab.core.errors import FacelabError
from facelab.stargan.config import StarGANConfig
from facelab.stargan.data import CelebADataset, preprocess, read_attributes
from facelab.stargan.split import load_split, resolved_mode

from conftest import SHARED_DATA


def _write(tmp_path, text):
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text(text)
    return path


GOOD = "3\nBlack_Hair Male Young\na.jpg 1 -1 1\nb.jpg -1 1 -1\nc.jpg -1 -1 1\n"


def _config(attr_path, **changes) -> StarGANConfig:
    return StarGANConfig(attr_path=attr_path, selected_attrs=["Male"], c_dim=1, **changes)


def test_reads_labels_in_selected_order(tmp_path):
    table = read_attributes(_write(tmp_path, GOOD), ["Young", "Black_Hair"])
    assert table.names == ["a.jpg", "b.jpg", "c.jpg"]
    assert table.labels.tolist() == [[1, 1], [0, 0], [1, 0]]


def test_line_split_without_identity_file(tmp_path):
    cfg = _config(_write(tmp_path, GOOD), test_count=2)
    assert resolved_mode(cfg) == "lines"
    assert load_split(cfg, "test").names == ["a.jpg", "b.jpg"]
    assert load_split(cfg, "train").names == ["c.jpg"]
    assert load_split(cfg, "train").lines == [5]  # each image keeps its line for error messages


SIX = "6\nBlack_Hair Male Young\n" + "".join(f"{n}.jpg 1 -1 1\n" for n in "abcdef")


def test_identity_split_holds_out_whole_people_in_order_of_first_appearance(tmp_path):
    attr_path = _write(tmp_path, SIX)
    (tmp_path / "identity_CelebA.txt").write_text("a.jpg 7\r\nb.jpg 3\r\nc.jpg 7\r\nd.jpg 5\r\ne.jpg 3\r\nf.jpg 9\r\n")
    cfg = _config(attr_path, test_identities=2, test_count=1)
    assert resolved_mode(cfg) == "identities"  # auto: the identity file lies beside the attribute file
    assert load_split(cfg, "test").names == ["a.jpg", "b.jpg", "c.jpg", "e.jpg"]  # people 7 and 3
    assert load_split(cfg, "train").names == ["d.jpg", "f.jpg"]
    # --train-identities keeps the first N people of the training split
    assert load_split(_config(attr_path, test_identities=2, train_identities=1), "train").names == ["d.jpg"]
    assert load_split(_config(attr_path, test_split="lines", test_count=1), "test").names == ["a.jpg"]
    assert load_split(_config(attr_path, test_identities=0), "test").names == []
    with pytest.raises(FacelabError, match=r"training split is empty.*--test-identities 4"):
        load_split(_config(attr_path, test_identities=4), "train")
    with pytest.raises(FacelabError, match="test_identities=-1 is out of range; use >= 0"):
        _config(attr_path, test_identities=-1)  # refused when the config is made, before any file is read


def test_identity_file_errors_name_the_file(tmp_path):
    attr_path = _write(tmp_path, GOOD)
    with pytest.raises(FacelabError, match="identity_CelebA.txt not found; --test-split identities needs it"):
        load_split(_config(attr_path, test_split="identities"), "test")
    with pytest.raises(FacelabError, match="not found; --train-identities needs it"):
        load_split(_config(attr_path, train_identities=2), "train")
    ids = tmp_path / "ids.txt"
    ids.write_text("a.jpg 1\nb.jpg\n")
    with pytest.raises(FacelabError, match=r"ids.txt:2: expected 'IMAGE_NAME IDENTITY'"):
        load_split(_config(attr_path, identity_path=ids), "test")
    ids.write_text("a.jpg 1\nb.jpg 2\n")
    with pytest.raises(FacelabError, match=r"no identity for c.jpg \(.*list_attr_celeba.txt:5; 1 image"):
        load_split(_config(attr_path, identity_path=ids), "test")


@pytest.mark.skipif(not (SHARED_DATA / "celeba" / "identity_CelebA.txt").is_file(), reason="needs ../shared/data/celeba")
def test_default_split_of_the_shared_celeba_is_32_unseen_people():
    celeba = SHARED_DATA / "celeba"
    cfg = StarGANConfig(attr_path=celeba / "list_attr_celeba.txt")
    test, train = load_split(cfg, "test"), load_split(cfg, "train")
    assert (len(test.names), len(train.names)) == (960, 3840)  # 32 and 128 people of 30 images
    ids = dict(line.split() for line in (celeba / "identity_CelebA.txt").read_text().splitlines())
    assert len({ids[n] for n in test.names}) == 32
    assert not {ids[n] for n in test.names} & {ids[n] for n in train.names}
    assert test.names[0] == "000002.jpg" and ids["000002.jpg"] == "2937"


@pytest.mark.parametrize("text, selected, message", [
    (GOOD, ["Blond_Hair"], r":2: unknown attribute\(s\) Blond_Hair"),
    ("3\nBlack_Hair Male Young\na.jpg 1 -1 1\nb.jpg -1 1\nc.jpg -1 -1 1\n", ["Male"], r":4: expected an image name and 3 values"),
    ("3\nBlack_Hair Male Young\na.jpg 1 -1 1\nb.jpg -1 1 -1\nc.jpg -1 yes 1\n", ["Male"], r":5: attribute values must be 1 or -1"),
    ("5\nBlack_Hair Male Young\na.jpg 1 -1 1\n", ["Male"], r":1: declares 5 images but lists 1"),
    ("3\n", ["Male"], r"needs a count line and an attribute-name line"),
])
def test_bad_attribute_files_name_the_line(tmp_path, text, selected, message):
    with pytest.raises(FacelabError, match=message):
        read_attributes(_write(tmp_path, text), selected)


def test_missing_file_and_images(tmp_path):
    with pytest.raises(FacelabError, match="not found"):
        read_attributes(tmp_path / "nope.txt", ["Male"])
    table = read_attributes(_write(tmp_path, GOOD), ["Male"])
    (tmp_path / "img").mkdir()
    with pytest.raises(FacelabError, match=r":3: image a.jpg is not in .* \(3 listed image\(s\) missing\)"):
        CelebADataset(tmp_path / "img", table, 178, 128)
    with pytest.raises(FacelabError, match="split is empty"):
        load_split(_config(tmp_path / "list_attr_celeba.txt", test_count=3), "train")


def test_preprocess_crops_centre_and_normalises():
    img = np.zeros((218, 178, 3), np.uint8)
    img[20:198, :, 2] = 255  # red (BGR) exactly in the centre 178x178 crop, black outside
    out = preprocess(img, 178, 64)
    assert out.shape == (3, 64, 64) and out.dtype == np.float32
    assert np.allclose(out[0], 1.0) and np.allclose(out[1:], -1.0)  # RGB order, [-1, 1]
