"""`facelab merge --interactive`: DeepFaceLab's interactive merger as a page in the browser.

DeepFaceLab's merger is a window: the user steps through the frames, tunes the mask, erode, blur, colour
transfer, face scale, sharpening and blend of each with single keys, sees the result at once, and lets it
merge the rest with those settings. Here the window is a page (``interactive.html``) served from this
machine by :mod:`facelab.core.local_server`, with the same keys. Every change is saved at once into the
per-frame settings next to the output folder (:mod:`facelab.merge.frame_settings`), which ``facelab
merge`` uses; the page can also run the batch merge itself, stop it and start it again, and a stopped or
interrupted merge goes on where it was.

What the page shows is what the batch merge writes: both go through :class:`FrameMerger` (the frame's
group predicted by the model, then :meth:`FrameMerger.frame`, watermark included), so a tuned frame and the
merged file are the same pixels.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from http import HTTPStatus
from importlib import resources

import cv2
import numpy as np

from facelab.core.errors import FacelabError
from facelab.core.local_server import PNG, LocalServer, PageHandler, make_local_server, serve as local_serve
from facelab.io.images import read_image
from facelab.merge.config import FRAME_OPTIONS, MergeConfig
from facelab.merge.frame_settings import MergeLog, options_digest
from facelab.merge.merger import FrameMerger, FaceInput, MergeStats, output_paths

log = logging.getLogger("facelab")
CACHED_GROUPS = 4  # model outputs kept: the frames around the one shown step without running the model again


def option_table() -> list[dict]:
    """The per-frame options as the page draws their controls: name, help, and choices or range."""
    rows = []
    for f in dataclasses.fields(MergeConfig):
        if f.name in FRAME_OPTIONS:
            meta = f.metadata
            rows.append({"name": f.name, "help": meta["help"], "type": type(f.default).__name__,
                         "choices": list(meta["choices"]) if meta["choices"] else None,
                         "low": meta["low"], "high": meta["high"]})
    return sorted(rows, key=lambda row: FRAME_OPTIONS.index(row["name"]))


def _png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise FacelabError("could not encode the merged frame as PNG")
    return data.tobytes()


class MergeSession:
    """The merge behind the page: the frames, their settings (changes saved as they come), the model's
    outputs for the frames around the one shown, and the batch merge running in the background."""

    def __init__(self, merger: FrameMerger):
        if merger.output_dir is None:
            raise FacelabError("the interactive merger needs an output folder")
        self.merger = merger
        self.settings = merger.settings
        self.lock = threading.Lock()  # settings changes and the rendering cache
        self._inputs: OrderedDict[tuple, dict[int, list[FaceInput]]] = OrderedDict()
        self._rendered: tuple[tuple, bytes, bytes] | None = None
        self._stamp = merger.stamp()
        self._job: threading.Thread | None = None
        self._stop = threading.Event()
        self._rerun = False
        self._progress = {"merged": 0, "todo": 0, "error": "", "last": None}

    # ----------------------------------------------------------------------------------------- reading
    def listing(self) -> dict:
        plan = self.merger.plan
        return {"frames": [{"name": p.name, "faces": len(plan.faces_of.get(k, ()))} for k, p in enumerate(plan.frames)],
                "options": option_table(), "command": {n: getattr(self.merger.cfg, n) for n in FRAME_OPTIONS},
                "output_dir": str(self.merger.output_dir), "settings_file": str(self.settings.path)}

    def check_index(self, k: int) -> None:
        if not 0 <= k < len(self.merger.plan.frames):
            raise KeyError(k)

    def _version(self, k: int) -> tuple:
        """What frame ``k``'s picture depends on: its options and the mask modes of its group's frames
        (they decide which faces the model sees together)."""
        group = self.merger.groups[self.merger.group_of[k]]
        return k, options_digest(self.settings.values(k)), tuple(self.settings.values(j)["mask_mode"] for j in group)

    def frame(self, k: int) -> dict:
        with self.lock:
            owner = self.settings.owner(k)
            first, last = self.settings.run(k)
            version = self._version(k)
            values = self.settings.values(k)
        out, mask = output_paths(self.merger.plan, k, self.merger.output_dir, self.merger.mask_dir, self.merger.cfg)
        merged = out.is_file() and (mask is None or mask.is_file()) and \
            not MergeLog(self.merger.output_dir).stale(out.name, options_digest(values))
        return {"index": k, "name": self.merger.plan.frames[k].name, "faces": len(self.merger.plan.faces_of.get(k, ())),
                "values": values, "own": owner == k, "from": owner, "run": [first, last],
                "version": f"{version[1]}-{options_digest({'modes': list(version[2])})}",
                "merged": merged}

    def image(self, k: int, what: str) -> bytes:
        """Frame ``k`` as PNG: ``merged`` (as the batch merge writes it), ``mask`` (what was pasted) or ``original``."""
        if what == "original":
            return _png(read_image(self.merger.plan.frames[k]))
        with self.lock:
            version = self._version(k)
            if self._rendered is None or self._rendered[0] != version:
                self._rendered = (version, *self._render(k, self.settings.snapshot()))
            merged, mask = self._rendered[1:]
        return merged if what == "merged" else mask

    def _render(self, k: int, settings) -> tuple[bytes, bytes]:
        group_index = self.merger.group_of[k]
        key = (group_index, tuple(settings.values(j)["mask_mode"] for j in self.merger.groups[group_index]))
        if key not in self._inputs:
            self._inputs[key] = self.merger.predict(self.merger.groups[group_index], settings)
            while len(self._inputs) > CACHED_GROUPS:
                self._inputs.popitem(last=False)
        self._inputs.move_to_end(key)
        out, mask = self.merger.frame(k, self._inputs[key], settings, self._stamp)
        return _png(out), _png(mask)

    # ----------------------------------------------------------------------------------------- changing
    def change(self, k: int, payload) -> dict:
        """Apply a change the page sends: ``{"values": {...}}`` sets frame ``k``'s options (the frames after
        it without options of their own follow); ``{"first": a, "last": b}`` copies frame ``k``'s options to
        frames ``a..b``. The change is kept (and saved) only if frame ``k`` still merges with it."""
        if not isinstance(payload, dict) or not (set(payload) == {"values"} or set(payload) == {"first", "last"}):
            raise FacelabError('a change is {"values": {option: value}} or {"first": N, "last": M}')
        with self.lock:
            trial = self.settings.snapshot()
            if "values" in payload:
                trial.set(k, payload["values"])
            else:
                first, last = payload["first"], payload["last"]
                if not (isinstance(first, int) and isinstance(last, int)):
                    raise FacelabError("first and last are frame indices")
                trial.apply(first, last, self.settings.values(k))
            self._render(k, trial)  # a mask mode that cannot work on this frame is refused here, unsaved
            self.settings.own = trial.own
            self.settings.save()
            self._rendered = None
            if self._job is not None and self._job.is_alive():
                self._rerun = True  # the running merge picks the new settings up: stop it and go again
                self._stop.set()
        return self.frame(k)

    # ----------------------------------------------------------------------------------------- batch merge
    def merge_status(self) -> dict:
        running = self._job is not None and self._job.is_alive()
        todo = self._progress["todo"] if running else len(self.merger.todo(self.settings.snapshot())[0])
        return {"running": running, "merged": self._progress["merged"], "todo": todo,
                "frames": len(self.merger.plan.frames), "error": self._progress["error"], "last": self._progress["last"]}

    def start_merge(self) -> dict:
        with self.lock:
            if self._job is None or not self._job.is_alive():
                self._stop.clear()
                self._progress.update(merged=0, error="", last=None)
                self._job = threading.Thread(target=self._merge_all, name="facelab-merge", daemon=True)
                self._job.start()
        return self.merge_status()

    def stop_merge(self, wait: bool = False) -> dict:
        """Stop the background merge after the frames handed over; ``wait``: until they are written."""
        with self.lock:
            self._rerun = False
            self._stop.set()
            job = self._job
        if wait and job is not None:
            job.join()
        return self.merge_status()

    def _merge_all(self) -> None:
        def merged(k: int) -> None:
            self._progress["merged"] += 1

        try:
            while True:
                with self.lock:
                    self._rerun = False
                    self._stop.clear()
                    self._progress["todo"] = len(self.merger.todo(self.settings.snapshot())[0])
                stats: MergeStats = self.merger.run(stop=self._stop, on_frame=merged)
                self._progress["last"] = {"merged": stats.merged, "skipped": stats.skipped, "stopped": stats.stopped}
                if not self._rerun:
                    return
        except FacelabError as exc:
            self._progress["error"] = str(exc)
        except Exception as exc:  # shown on the page, with the traceback in the terminal
            log.exception("the background merge failed")
            self._progress["error"] = f"the merge failed: {type(exc).__name__}: {exc}"


class _Handler(PageHandler):
    METHODS = ("GET", "PUT", "POST")

    def route(self) -> None:
        session: MergeSession = self.server.app
        parts = self.url_path.strip("/").split("/")
        if parts[:1] != ["api"]:
            return self.not_found()
        try:
            if parts == ["api", "session"] and self.command == "GET":
                return self.reply_json(HTTPStatus.OK, session.listing())
            if parts == ["api", "merge"]:
                return self._merge(session)
            if len(parts) in (3, 4) and parts[1] == "frames" and parts[2].isdigit():
                return self._frame(session, int(parts[2]), parts[3] if len(parts) == 4 else "")
        except FacelabError as exc:
            return self.reply_json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        return self.not_found()

    def _frame(self, session: MergeSession, k: int, what: str) -> None:
        try:
            session.check_index(k)
        except KeyError:
            return self.not_found(f"no frame {k}: the merge has {len(session.merger.plan.frames)} frames")
        if self.command == "GET" and what == "":
            return self.reply_json(HTTPStatus.OK, session.frame(k))
        if self.command == "GET" and what in ("merged.png", "mask.png", "original.png"):
            return self.send(HTTPStatus.OK, session.image(k, what.removesuffix(".png")), PNG)
        if self.command == "PUT" and what == "settings":
            ok, payload = self.json_body()
            if ok:
                self.reply_json(HTTPStatus.OK, session.change(k, payload))
            return None
        return self.not_found()

    def _merge(self, session: MergeSession) -> None:
        if self.command == "GET":
            return self.reply_json(HTTPStatus.OK, session.merge_status())
        if self.command != "POST":
            return self.reply_json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "GET the merge's state or POST {\"run\": true|false}"})
        ok, payload = self.json_body()
        if not ok:
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("run"), bool):
            return self.reply_json(HTTPStatus.BAD_REQUEST, {"error": 'POST {"run": true} to merge, {"run": false} to stop'})
        return self.reply_json(HTTPStatus.OK, session.start_merge() if payload["run"] else session.stop_merge())


def make_server(merger: FrameMerger, host: str = "127.0.0.1", port: int = 0) -> LocalServer:
    """The interactive merger's HTTP server for ``merger`` (port 0: any free port); call serve_forever()."""
    page = resources.files("facelab.merge").joinpath("interactive.html").read_bytes()
    return make_local_server(_Handler, MergeSession(merger), page, "interactive merger", host, port)


def serve(merger: FrameMerger, host: str = "127.0.0.1", port: int = 8766, open_browser: bool = True) -> None:
    """Serve the page until Ctrl-C; a merge running then finishes the frames it handed over first."""
    server = make_server(merger, host, port)
    try:
        local_serve(server, f"merging {merger.input_dir} into {merger.output_dir}; Ctrl-C to stop, settings are "
                            f"saved as you go in {merger.settings.path}", open_browser)
    finally:
        server.app.stop_merge(wait=True)
