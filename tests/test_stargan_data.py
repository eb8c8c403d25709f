"""CelebA attribute file parsing and preprocessing: every bad input is one error naming the line."""

from __future__ import annotations

import numpy as np
import pytest

from facelab.core.errors import FacelabError
from facelab.stargan.data import CelebADataset, preprocess, read_attributes, split


def _write(tmp_path, text):
    path = tmp_path / "list_attr_celeba.txt"
    path.write_text(text)
    return path


GOOD = "3\nBlack_Hair Male Young\na.jpg 1 -1 1\nb.jpg -1 1 -1\nc.jpg -1 -1 1\n"


def test_reads_labels_in_selected_order(tmp_path):
    table = read_attributes(_write(tmp_path, GOOD), ["Young", "Black_Hair"])
    assert table.names == ["a.jpg", "b.jpg", "c.jpg"]
    assert table.labels.tolist() == [[1, 1], [0, 0], [1, 0]]
    assert split(table, 2, "test").names == ["a.jpg", "b.jpg"]
    assert split(table, 2, "train").names == ["c.jpg"]


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
        split(table, 3, "train")


def test_preprocess_crops_centre_and_normalises():
    img = np.zeros((218, 178, 3), np.uint8)
    img[20:198, :, 2] = 255  # red (BGR) exactly in the centre 178x178 crop, black outside
    out = preprocess(img, 178, 64)
    assert out.shape == (3, 64, 64) and out.dtype == np.float32
    assert np.allclose(out[0], 1.0) and np.allclose(out[1:], -1.0)  # RGB order, [-1, 1]
