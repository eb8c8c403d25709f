"""The XSeg editor's server on a real faceset: the page, the faces, and labels written into the metadata."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from facelab.core.errors import FacelabError
from facelab.extract.config import ExtractConfig
from facelab.extract.pipeline import extract
from facelab.faceset.store import Faceset, pack
from facelab.io.images import decode_image
from facelab.masks.labels import has_label, label_mask, paint_polygons
from facelab.xseg.editor import make_server

INCLUDE = [[10, 10], [85, 12], [80, 88], [14, 84]]
EXCLUDE = [[30, 30], [60, 30], [45, 55]]


@pytest.fixture(scope="module")
def faceset(sample_clips, tmp_path_factory):
    """Ten real faces (whole face, 96 px) from the first sample clip."""
    folder = tmp_path_factory.mktemp("editor") / "aligned"
    extract(sample_clips[0], folder, ExtractConfig(face_type="whole", size=96, workers=1, fps=5))
    return folder


@pytest.fixture
def editor(faceset, tmp_path):
    """A running editor on a copy of the faceset; yields (base url, folder)."""
    folder = tmp_path / "faces"
    shutil.copytree(faceset, folder)
    server = make_server(folder, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()
    server.server_close()


def call(method: str, url: str, body=None) -> tuple[int, dict | bytes]:
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as res:
            status, raw, ctype = res.status, res.read(), res.headers["Content-Type"]
    except urllib.error.HTTPError as err:
        status, raw, ctype = err.code, err.read(), err.headers["Content-Type"]
    return status, json.loads(raw) if ctype == "application/json" else raw


def test_serves_the_page_the_faces_and_their_images(editor):
    url, folder = editor
    status, page = call("GET", url + "/")
    assert status == 200 and b"<canvas" in page and b"/api/faces" in page
    status, listing = call("GET", url + "/api/faces")
    faceset = Faceset.open(folder)
    assert status == 200 and [f["name"] for f in listing["faces"]] == faceset.names and len(faceset) >= 8
    assert all(f["size"] == 96 and not f["labelled"] and f["applied"] is None for f in listing["faces"])
    status, blob = call("GET", url + "/api/faces/3/image")
    assert status == 200 and np.array_equal(decode_image(blob), faceset.image(3))
    assert call("GET", url + f"/api/faces/{len(faceset)}/image")[0] == 404
    assert call("GET", url + "/etc/passwd")[0] == 404


def test_saved_polygons_are_the_label_and_the_pixels_stay(editor):
    url, folder = editor
    before = Faceset.open(folder)
    status, face = call("PUT", url + "/api/faces/2/label", {"include": [INCLUDE], "exclude": [EXCLUDE]})
    assert status == 200 and face["labelled"] and face["include"] == [INCLUDE]
    after = Faceset.open(folder)
    expected = paint_polygons([INCLUDE], [EXCLUDE], 96, 96)
    assert np.array_equal(label_mask(after.metas[2]), expected) and expected.sum() > 3000
    assert expected[40, 45] == 0 and expected[70, 45] == 1  # the exclude is a hole in the include
    assert np.array_equal(after.image(2), before.image(2))  # metadata only: no re-encoding
    assert [has_label(m) for m in after.metas].count(True) == 1
    assert all(a == b for i, (a, b) in enumerate(zip(before.blobs, after.blobs)) if i != 2)
    # drawn at sub-pixel positions, points are stored as whole pixels
    call("PUT", url + "/api/faces/2/label", {"include": [[[10.4, 10.6], [85.2, 12], [80, 88.49]]]})
    assert Faceset.open(folder).metas[2].extra["seg_polygons"] == [[[10, 11], [85, 12], [80, 88]]]
    # "no face visible" is a label with no polygon; delete makes the face unlabelled again
    status, face = call("PUT", url + "/api/faces/2/label", {"include": [], "exclude": []})
    assert face["labelled"] and not label_mask(Faceset.open(folder).metas[2]).any()
    status, face = call("DELETE", url + "/api/faces/2/label")
    assert status == 200 and not face["labelled"] and not has_label(Faceset.open(folder).metas[2])


def test_bad_labels_are_refused_and_nothing_is_written(editor):
    url, folder = editor
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    cases = [({"include": [[[1, 1], [5, 5]]]}, "include polygon 0 needs at least 3"),
             ({"exclude": [[[1, 1], [5, 5], [200, 5]]]}, "exclude polygon 0 leaves the 96x96 face"),
             ({"include": [], "colour": "red"}, "a label is"),
             (b"{not json", "Expecting property name")]
    for body, message in cases:
        status, reply = call("PUT", url + "/api/faces/1/label", body)
        assert status == 400 and message in reply["error"] and "\n" not in reply["error"], reply
    assert call("PUT", url + "/api/faces/99/label", {"include": []})[0] == 404
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files


def test_labels_land_in_a_packed_faceset_too(faceset, tmp_path):
    folder = tmp_path / "packed"
    shutil.copytree(faceset, folder)
    pack(folder)
    server = make_server(folder, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert call("PUT", url + "/api/faces/0/label", {"include": [INCLUDE]})[0] == 200
    finally:
        server.shutdown()
        server.server_close()
    reopened = Faceset.open(folder)
    assert reopened.packed and np.array_equal(label_mask(reopened.metas[0]), paint_polygons([INCLUDE], [], 96, 96))
    assert cv2.countNonZero(label_mask(reopened.metas[0])) > 0 and not has_label(reopened.metas[1])


def test_a_busy_port_is_one_line(faceset):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(FacelabError, match="choose another --port"):
            make_server(faceset, port=busy.getsockname()[1])
