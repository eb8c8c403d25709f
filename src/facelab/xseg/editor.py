"""`facelab xseg edit`: DeepFaceLab's XSeg editor as a page in the browser, served from this machine.

The page (``editor.html``) lists the faces of one faceset, shows each with its label polygons (and the
applied XSeg mask, if any) and sends the edited polygons back, which are stored in the face's metadata
exactly as ``xseg import-masks`` stores labels (pixels untouched). The server, and why it answers this
machine only, is :mod:`facelab.core.local_server`, shared with the interactive merger and the training view.
"""

from __future__ import annotations

import re
import threading
from http import HTTPStatus
from importlib import resources
from pathlib import Path

from facelab.core.errors import FacelabError
from facelab.core.local_server import LocalServer, PageHandler, make_local_server, serve as local_serve
from facelab.faceset.store import Faceset
from facelab.face.masks.applied import KEY as APPLIED_KEY, applied_mask, has_applied_mask
from facelab.face.masks.labels import EXCLUDE_KEY, INCLUDE_KEY, clear_label, editable_polygons, has_label, set_polygons

_FACE_URL = re.compile(r"^/api/faces/(\d+)/(image|label|applied-polygons)$")
_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


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


class _Handler(PageHandler):
    METHODS = ("GET", "PUT", "DELETE")

    def _face(self) -> tuple[int, str] | None:
        match = _FACE_URL.match(self.url_path)
        if not match:
            self.not_found()
            return None
        store: LabelStore = self.server.app
        i = int(match.group(1))
        try:
            store.check_index(i)
        except KeyError:
            self.not_found(f"no face {i}: the faceset has {len(store.faceset)}")
            return None
        return i, match.group(2)

    def route(self) -> None:
        store: LabelStore = self.server.app
        if self.command == "GET" and self.url_path == "/api/faces":
            return self.reply_json(HTTPStatus.OK, store.listing())
        face = self._face()
        if face is None:
            return None
        i, what = face
        if self.command == "GET":
            if what == "applied-polygons":
                try:
                    return self.reply_json(HTTPStatus.OK, store.applied_polygons(i))
                except FacelabError as exc:
                    return self.not_found(str(exc))
            if what != "image":
                return self.reply_json(HTTPStatus.OK, store.face(i))
            ctype = _TYPES.get(Path(store.faceset.names[i]).suffix.lower(), "application/octet-stream")
            return self.send(HTTPStatus.OK, store.faceset.blobs[i], ctype)
        if what != "label":
            message = "PUT a JSON label to /api/faces/N/label" if self.command == "PUT" else "only a label can be deleted"
            return self.reply_json(HTTPStatus.BAD_REQUEST, {"error": message})
        if self.command == "DELETE":
            return self.reply_json(HTTPStatus.OK, store.delete(i))
        ok, payload = self.json_body()
        if not ok:
            return None
        try:
            return self.reply_json(HTTPStatus.OK, store.save(i, payload))
        except FacelabError as exc:
            return self.reply_json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})


def make_server(folder: str | Path, host: str = "127.0.0.1", port: int = 0) -> LocalServer:
    """The editor's HTTP server for the faceset ``folder`` (port 0: any free port); call serve_forever()."""
    page = resources.files("facelab.xseg").joinpath("editor.html").read_bytes()
    return make_local_server(_Handler, LabelStore(folder), page, "XSeg editor", host, port)


def serve(folder: str | Path, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = True) -> None:
    """Serve the editor until Ctrl-C; every saved label is already on disk when it returns."""
    local_serve(make_server(folder, host, port), f"for {folder}; Ctrl-C to stop, labels are saved as you go", open_browser)
