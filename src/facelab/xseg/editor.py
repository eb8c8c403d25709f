"""`facelab xseg edit`: DeepFaceLab's XSeg editor as a page in the browser, served from this machine.

There is no screen toolkit in facelab's dependencies (OpenCV is the headless build), and a browser is on
every desktop, also on the other end of an SSH tunnel to a GPU box. The server is the standard library's
and serves one faceset: the page (``editor.html``) lists the faces, shows each with its label polygons
(and the applied XSeg mask, if any) and sends the edited polygons back, which are stored in the face's
metadata exactly as ``xseg import-masks`` stores labels (pixels untouched).

It is reachable from this machine only. It listens on a loopback address, and because any web page the
user opens could make the browser send requests to it (DNS rebinding: a page's own name resolving to
127.0.0.1), it answers only requests whose Host names a loopback address and whose Origin, if any, is
its own page; everything else gets 403. Idle connections are closed after ``IDLE_TIMEOUT_S``, so
stalled clients cannot pile up threads; every malformed request is answered with a 4xx.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import threading
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from facelab.core.errors import FacelabError
from facelab.faceset.store import Faceset
from facelab.face.masks.applied import KEY as APPLIED_KEY, applied_mask, has_applied_mask
from facelab.face.masks.labels import EXCLUDE_KEY, INCLUDE_KEY, clear_label, editable_polygons, has_label, set_polygons

log = logging.getLogger("facelab")
_FACE_URL = re.compile(r"^/api/faces/(\d+)/(image|label|applied-polygons)$")
_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
MAX_BODY = 4 << 20  # a label is a few KB of points; refuse anything absurd
IDLE_TIMEOUT_S = 10.0  # a browser sends its request at once; a connection silent this long is dropped


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a name or address, without port) is this machine's loopback."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_of(netloc: str) -> str | None:
    """The host part of a ``Host`` header or URL netloc (``127.0.0.1:8765``, ``[::1]:80``, ``localhost``)."""
    try:
        return urlsplit("//" + netloc).hostname
    except ValueError:
        return None


class LabelStore:
    """The faceset behind the editor: what the page reads, and label writes serialised by one lock."""

    def __init__(self, folder: str | Path):
        self.faceset = Faceset.open(folder)
        self.lock = threading.Lock()

    def face(self, i: int) -> dict:
        meta = self.faceset.metas[i]
        return {"index": i, "name": self.faceset.names[i], "size": meta.size, "labelled": has_label(meta),
                "include": meta.extra.get(INCLUDE_KEY, []), "exclude": meta.extra.get(EXCLUDE_KEY, []),
                "applied": meta.extra.get(APPLIED_KEY)}

    def listing(self) -> dict:
        return {"faceset": str(self.faceset.root), "faces": [self.face(i) for i in range(len(self.faceset))]}

    def check_index(self, i: int) -> None:
        if not 0 <= i < len(self.faceset):
            raise KeyError(i)

    def applied_polygons(self, i: int) -> dict:
        """The applied XSeg mask as editable polygons, to correct the segmenter's mistakes by hand."""
        meta = self.faceset.metas[i]
        if not has_applied_mask(meta):
            raise FacelabError(f"{self.faceset.names[i]} has no applied XSeg mask; run `facelab xseg apply` first")
        include, exclude = editable_polygons(applied_mask(meta) >= 0.5)
        return {"include": include, "exclude": exclude}

    def save(self, i: int, payload) -> dict:
        if not isinstance(payload, dict) or set(payload) - {"include", "exclude"}:
            raise FacelabError("a label is {\"include\": [polygons], \"exclude\": [polygons]}")
        with self.lock:
            meta = self.faceset.metas[i]
            set_polygons(meta, payload.get("include", []), payload.get("exclude", []), self.faceset.names[i])
            self.faceset.update_metas({i: meta})
        return self.face(i)

    def delete(self, i: int) -> dict:
        with self.lock:
            meta = self.faceset.metas[i]
            if clear_label(meta):
                self.faceset.update_metas({i: meta})
        return self.face(i)


def _handler(store: LabelStore, page: bytes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = IDLE_TIMEOUT_S  # socket timeout for every read: idle and stalled clients are dropped

        def log_message(self, fmt, *args):  # requests go to the debug log, not over the terminal
            log.debug("xseg edit: " + fmt, *args)

        def _refused(self) -> bool:
            """Answer 403 to a request not meant for this machine's editor (see the module doc)."""
            origin = self.headers.get("Origin")
            if not is_loopback(_host_of(self.headers.get("Host", ""))):
                reason = "this editor answers only requests for 127.0.0.1 or localhost"
            elif origin is not None and not (origin.startswith("http://") and is_loopback(_host_of(origin[7:]))):
                reason = "requests from other web pages are refused"
            else:
                return False
            self.close_connection = True
            self._json(HTTPStatus.FORBIDDEN, {"error": reason})
            return True

        def __getattr__(self, name: str):
            """Any other method (POST, PATCH, ...) is 405, a client error, not http.server's 501."""
            if name.startswith("do_"):
                return lambda: self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{self.command} is not used here"})
            raise AttributeError(name)

        def _body(self) -> bytes | None:
            """The request body, or None after answering 400/413 for a missing, bad or huge length."""
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length > MAX_BODY:
                self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"a label is at most {MAX_BODY} bytes"})
            elif length <= 0:
                self._json(HTTPStatus.BAD_REQUEST, {"error": "PUT a JSON label with a Content-Length"})
            else:
                return self.rfile.read(length)
            self.close_connection = True
            return None

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def _face(self) -> tuple[int, str] | None:
            match = _FACE_URL.match(self.path)
            if not match:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such address {self.path}"})
                return None
            i = int(match.group(1))
            try:
                store.check_index(i)
            except KeyError:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no face {i}: the faceset has {len(store.faceset)}"})
                return None
            return i, match.group(2)

        def do_GET(self):
            if self._refused():
                return None
            if self.path in ("/", "/index.html"):
                return self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
            if self.path == "/api/faces":
                return self._json(HTTPStatus.OK, store.listing())
            if self.path == "/favicon.ico":
                return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
            face = self._face()
            if face is None:
                return None
            i, what = face
            if what == "applied-polygons":
                try:
                    return self._json(HTTPStatus.OK, store.applied_polygons(i))
                except FacelabError as exc:
                    return self._json(HTTPStatus.NOT_FOUND, {"error": str(exc)})
            if what != "image":
                return self._json(HTTPStatus.OK, store.face(i))
            ctype = _TYPES.get(Path(store.faceset.names[i]).suffix.lower(), "application/octet-stream")
            return self._send(HTTPStatus.OK, store.faceset.blobs[i], ctype)

        def do_PUT(self):
            if self._refused():
                return None
            face = self._face()
            if face is None:
                return None
            i, what = face
            if what != "label":
                return self._json(HTTPStatus.BAD_REQUEST, {"error": "PUT a JSON label to /api/faces/N/label"})
            body = self._body()
            if body is None:
                return None
            try:
                payload = json.loads(body)
            except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
                return self._json(HTTPStatus.BAD_REQUEST, {"error": f"the label is not valid JSON ({exc})"[:300]})
            try:
                return self._json(HTTPStatus.OK, store.save(i, payload))
            except FacelabError as exc:
                return self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})

        def do_DELETE(self):
            if self._refused():
                return None
            face = self._face()
            if face is None:
                return None
            i, what = face
            if what != "label":
                return self._json(HTTPStatus.BAD_REQUEST, {"error": "only a label can be deleted"})
            return self._json(HTTPStatus.OK, store.delete(i))

    return Handler


def make_server(folder: str | Path, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """The editor's HTTP server for the faceset ``folder`` (port 0: any free port); call serve_forever()."""
    if not is_loopback(host):
        raise FacelabError(f"--host {host} is not this machine: the editor listens on 127.0.0.1 or localhost only; "
                           f"from another machine use an SSH tunnel (ssh -L {port or 8765}:127.0.0.1:{port or 8765} THIS_HOST)")
    if not 0 <= port <= 65535:
        raise FacelabError(f"--port {port} is out of range; use 0..65535 (0 = any free port)")
    store = LabelStore(folder)
    page = resources.files("facelab.xseg").joinpath("editor.html").read_bytes()
    try:
        return ThreadingHTTPServer((host, port), _handler(store, page))
    except OSError as exc:
        raise FacelabError(f"cannot serve the XSeg editor on {host}:{port} ({exc.strerror}); "
                           "choose another --port") from None


def serve(folder: str | Path, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = True) -> None:
    """Serve the editor until Ctrl-C; every saved label is already on disk when it returns."""
    server = make_server(folder, host, port)
    url = f"http://{host}:{server.server_address[1]}/"
    print(f"XSeg editor for {folder} at {url} (Ctrl-C to stop; labels are saved as you go)")
    if open_browser:
        webbrowser.open(url)
    try:
        server.serve_forever()  # Ctrl-C ends it (exit 130, as everywhere); the labels are on disk already
    finally:
        server.server_close()
