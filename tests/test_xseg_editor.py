"""The XSeg editor on a real faceset: its server (the page, the faces, labels written into the metadata) and,
behind the ``browser`` marker, the page driven in headless Chromium."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
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
from facelab.face.masks.applied import set_applied_mask
from facelab.face.masks.labels import EXCLUDE_KEY, INCLUDE_KEY, has_label, label_mask, paint_polygons
from facelab.metrics.iou import mask_iou
from facelab.xseg.editor import make_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
INCLUDE = [[10, 10], [85, 12], [80, 88], [14, 84]]
APPLIED = cv2.circle(np.zeros((96, 96), np.uint8), (48, 50), 36, 1, -1)  # a segmenter's mask of a 96 px face
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


def test_applied_mask_comes_back_as_editable_polygons(faceset, tmp_path):
    """DeepFaceLab's fetch-then-edit: the segmenter's mask of a face (here a disk with a hole: a face with
    glasses painted out) comes as a few dozen polygon corners that, saved as the label, give the mask back."""
    folder = tmp_path / "faces"
    shutil.copytree(faceset, folder)
    faces = Faceset.open(folder)
    mask = np.zeros((96, 96), np.uint8)
    cv2.circle(mask, (48, 50), 36, 1, -1)
    cv2.rectangle(mask, (30, 35), (66, 45), 0, -1)
    meta = faces.metas[4]
    set_applied_mask(meta, mask)
    faces.update_metas({4: meta})
    server = make_server(folder, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/api/faces"
        status, polys = call("GET", f"{url}/4/applied-polygons")
        assert status == 200 and len(polys["include"]) == 1 and len(polys["exclude"]) == 1
        assert sum(len(p) for p in polys["include"] + polys["exclude"]) < 80  # editable, not every edge pixel
        assert call("PUT", f"{url}/4/label", polys)[0] == 200
        status, reply = call("GET", f"{url}/3/applied-polygons")
        assert status == 404 and "has no applied XSeg mask" in reply["error"]
    finally:
        server.shutdown()
        server.server_close()
    assert mask_iou(label_mask(Faceset.open(folder).metas[4]) > 0, mask > 0) > 0.97


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


def raw(url: str, request: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    """Send ``request`` as it is over one connection; (status, body) of the answer, (0, b"") if closed unanswered."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    if not data:
        return 0, b""
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def put(url: str, body: bytes, host: str | None = None, extra: str = "", length: str | None = None) -> bytes:
    host = url.removeprefix("http://") if host is None else host
    length = str(len(body)) if length is None else length
    return (f"PUT /api/faces/1/label HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n{extra}Connection: close\r\n\r\n").encode() + body


def test_requests_for_other_hosts_or_pages_are_refused(editor):
    """DNS rebinding: a page of evil.example resolving to 127.0.0.1 sends Host: evil.example; a page of any
    other site sends its own Origin. Neither may read a face or change a label."""
    url, folder = editor
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    port = url.rsplit(":", 1)[1]
    label = json.dumps({"include": [INCLUDE]}).encode()
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}", ""):
        get = f"GET /api/faces HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        status, body = raw(url, get)
        assert status == 403 and b"127.0.0.1 or localhost" in body and b"faces" not in body.split(b"error")[0]
        assert raw(url, put(url, label, host=host))[0] == 403, host
    for origin in ("http://evil.example", f"http://evil.example:{port}", "null", f"https://127.0.0.1.evil.example"):
        assert raw(url, put(url, label, extra=f"Origin: {origin}\r\n"))[0] == 403
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files
    # the editor's own page (any loopback name, any port: an SSH tunnel may forward another one) still works
    for host in (f"localhost:{port}", "127.0.0.1:9999", f"[::1]:{port}"):
        assert raw(url, put(url, label, host=host, extra=f"Origin: http://{host}\r\n"))[0] == 200
    assert has_label(Faceset.open(folder).metas[1])


def test_malformed_requests_are_4xx_and_change_nothing(editor):
    url, folder = editor
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    deep = b"[" * 100_000 + b"]" * 100_000
    cases = [(put(url, b'{"include": null}'), 400, b"include must be a list"),
             (put(url, b'{"include": "abc"}'), 400, b"include must be a list"),
             (put(url, b'{"include": [[["a", "b"], [1, 2], [3, 4]]]}'), 400, b"needs at least 3"),
             (put(url, b'{"exclude": [{"x": 1}]}'), 400, b"needs at least 3"),
             (put(url, b"[]"), 400, b"a label is"),
             (put(url, b"null"), 400, b"a label is"),
             (put(url, deep[:3_000_000]), 400, b"not valid JSON"),
             (put(url, b"{}", length="abc"), 400, b"Content-Length"),
             (put(url, b"{}", length="-5"), 400, b"Content-Length"),
             (put(url, b"", length=str(10 << 20)), 413, b"at most"),
             (b"POST /api/faces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n", 405, b"POST"),
             (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414, b"")]
    for request, status, message in cases:
        got, body = raw(url, request)
        assert got == status and message in body, (request[:80], got, body[:200])
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files
    assert call("GET", url + "/api/faces")[0] == 200  # the server is still serving


def test_idle_connections_are_closed(faceset, tmp_path, monkeypatch):
    """A client that connects and sends nothing (or half a request) holds a thread only until the timeout."""
    import facelab.core.local_server as local_server

    monkeypatch.setattr(local_server, "IDLE_TIMEOUT_S", 0.5)
    server = make_server(faceset, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        stalled = [socket.create_connection(("127.0.0.1", server.server_address[1])) for _ in range(20)]
        stalled[0].sendall(b"GET /api/faces HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never finished
        for conn in stalled:
            conn.settimeout(5)
            assert conn.recv(100) == b""  # closed by the server, not by our timeout (that would raise)
            conn.close()
        deadline = time.monotonic() + 5
        while threading.active_count() > 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert threading.active_count() <= 3  # main, serve_forever, maybe one more: no thread per stalled client
        assert call("GET", url + "/api/faces")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_the_editor_listens_on_this_machine_only(faceset):
    for host in ("0.0.0.0", "192.168.1.10", "example.com"):
        with pytest.raises(FacelabError, match="SSH tunnel"):
            make_server(faceset, host=host, port=0)
    with pytest.raises(FacelabError, match="0..65535"):
        make_server(faceset, port=70000)


# ---------------------------------------------------------------- the page itself, in headless Chromium
# Behind the ``browser`` marker (not in the default run or CI): it needs Debian's chromium and the
# ``playwright`` package. Run with ``python3 -m pytest -m browser tests/test_xseg_editor.py``.


@pytest.fixture
def page(faceset, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        pytest.skip("needs Chromium (apt-get install chromium)")
    folder = tmp_path / "faces"
    shutil.copytree(faceset, folder)
    faces = Faceset.open(folder)
    meta = faces.metas[1]
    set_applied_mask(meta, APPLIED)  # face 2 has a segmenter mask to start from
    faces.update_metas({1: meta})
    server = make_server(folder, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        page.wait_for_function("document.getElementById('title').textContent.startsWith('face 1 /')")
        page.folder = folder
        yield page
        browser.close()
    server.shutdown()
    server.server_close()


def wait_title(page, prefix: str) -> None:
    page.wait_for_function(f"document.getElementById('title').textContent.startsWith({prefix!r})")


@pytest.mark.browser
def test_page_draws_drags_saves_and_navigates(page):
    box = page.locator("#view").bounding_box()
    size = Faceset.open(page.folder).metas[0].size
    s = box["width"] / size

    def at(x, y):
        return box["x"] + (x + 0.5) * s, box["y"] + (y + 0.5) * s

    for x, y in [(10, 10), (85, 10), (85, 90), (10, 90)]:
        page.mouse.click(*at(x, y))
    page.keyboard.press("Enter")
    page.keyboard.press("e")
    for x, y in [(25, 20), (75, 20), (50, 45)]:
        page.mouse.click(*at(x, y))
    page.mouse.click(*at(0, 0), button="right")  # closes the exclude polygon
    page.mouse.move(*at(10, 10))
    page.mouse.down()
    page.mouse.move(*at(5, 6), steps=4)
    page.mouse.up()
    page.keyboard.press("s")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('labelled')")
    meta = Faceset.open(page.folder).metas[0]
    assert meta.extra[INCLUDE_KEY] == [[[5, 6], [85, 10], [85, 90], [10, 90]]]
    assert meta.extra[EXCLUDE_KEY] == [[[25, 20], [75, 20], [50, 45]]]
    # points being drawn and then dropped are no change: moving on saves nothing
    page.keyboard.press("d")
    wait_title(page, "face 2 /")
    page.mouse.click(*at(10, 10))
    page.keyboard.press("Backspace")
    page.keyboard.press("n")
    wait_title(page, "face 3 /")
    # an include polygon (the mode stays exclude until I) closed on face 3, then "previous": saved on the way
    page.keyboard.press("i")
    for x, y in [(20, 20), (60, 20), (40, 60)]:
        page.mouse.click(*at(x, y))
    page.mouse.click(*at(20, 20))  # a click on the first point closes it
    page.keyboard.press("a")
    wait_title(page, "face 2 /")
    metas = Faceset.open(page.folder).metas
    assert [has_label(m) for m in metas[:3]] == [True, False, True]
    assert metas[2].extra[INCLUDE_KEY] == [[[20, 20], [60, 20], [40, 60]]]
    # face 2: start from its applied mask (F) and save it as the label (S)
    page.keyboard.press("f")
    page.wait_for_function("document.getElementById('status').textContent.includes('changed, not saved); 1 polygons')")
    page.keyboard.press("s")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('labelled')")
    assert mask_iou(label_mask(Faceset.open(page.folder).metas[1]) > 0, APPLIED > 0) > 0.97
    assert page.errors == []
