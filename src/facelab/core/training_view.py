"""The live training view (``facelab view MODEL_DIR``, ``facelab train ... --view``): DeepFaceLab's training
preview window as a page in the browser, and the files through which it talks to a running trainer.

DeepFaceLab's trainer opens a window with the preview grid and the loss history, and takes keys: save,
refresh the preview, stop (saving first). Here a page (``training_view.html``, served by
:mod:`facelab.core.local_server`) reads what every trainer already writes into its model folder
(``preview.png``, ``losses.csv``, ``eval.csv``, ``state.yaml``) and refreshes as they change, so it works
the same beside the trainer in one process (``--view``) and from a second terminal, for a run that is
going or one that ended. Its keys become request files in the model folder (:func:`send_request`), which
the shared step driver takes after each step (``core.training.run_steps``): nothing else connects the two.
A preview names its rows and columns in ``preview.json`` beside ``preview.png`` (:func:`write_preview`),
so the page labels whatever grid a trainer draws.
"""

from __future__ import annotations

import csv
import json
import math
import threading
import webbrowser
from contextlib import contextmanager
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import yaml

from facelab.core.errors import FacelabError
from facelab.core.files import atomic_write_bytes, atomic_write_text
from facelab.core.local_server import PNG, LocalServer, PageHandler, make_local_server, serve as local_serve

# What a view may ask of a running trainer, in the order the trainer answers them: save now, write a
# preview now, stop (after saving, as Ctrl-C does).
REQUESTS = ("save", "preview", "stop")
METRICS = ("losses", "eval")  # the CSV logs of a model folder (core.logs.MetricsLog)
MAX_POINTS = 1000  # points per curve sent to the page; longer logs are thinned evenly (the last row kept)


def request_path(model_dir: str | Path, what: str) -> Path:
    return Path(model_dir) / f"request.{what}"


def send_request(model_dir: str | Path, what: str) -> None:
    """Ask the trainer of ``model_dir`` to ``what`` (one of REQUESTS) after its current step."""
    if what not in REQUESTS:
        raise FacelabError(f"a trainer can be asked to {', '.join(REQUESTS)}, not {what!r}")
    if not Path(model_dir).is_dir():
        raise FacelabError(f"{model_dir} is not a model folder (yet); start the training first")
    atomic_write_text(request_path(model_dir, what), what + "\n")


def pending_requests(model_dir: str | Path) -> list[str]:
    return [what for what in REQUESTS if request_path(model_dir, what).exists()]


def take_requests(model_dir: str | Path) -> list[str]:
    """The requests waiting for the trainer of ``model_dir``, removed as they are taken."""
    taken = []
    for what in REQUESTS:
        path = request_path(model_dir, what)
        if path.exists():
            path.unlink(missing_ok=True)
            taken.append(what)
    return taken


def write_preview(model_dir: str | Path, image: np.ndarray, iteration: int, rows: list[str] | None = None,
                  columns: list[str] | None = None) -> bytes:
    """Write ``preview.png`` and, beside it, ``preview.json`` naming its rows or columns and the iteration
    (the view labels the grid with them); returns the PNG."""
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise FacelabError("could not encode the training preview as PNG")
    model_dir = Path(model_dir)
    atomic_write_bytes(model_dir / "preview.png", png.tobytes())
    atomic_write_text(model_dir / "preview.json", json.dumps({"iteration": iteration, "rows": rows, "columns": columns}))
    return png.tobytes()


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        data = None  # being replaced right now, or damaged: the next poll reads it again
    return data if isinstance(data, dict) else {}


class ModelFolder:
    """A model folder as the view reads it; every read tolerates files that are missing or mid-write."""

    def __init__(self, model_dir: str | Path):
        self.root = Path(model_dir)

    def state(self) -> dict:
        saved = _read_yaml(self.root / "state.yaml")
        preview = {}
        try:
            preview = json.loads((self.root / "preview.json").read_text())
        except (OSError, ValueError):
            pass
        return {"model_dir": str(self.root), "saved_iteration": saved.get("iteration"), "saved_at": saved.get("saved_at"),
                "preview": {"version": _mtime(self.root / "preview.png"), "iteration": preview.get("iteration"),
                            "rows": preview.get("rows"), "columns": preview.get("columns")},
                "metrics": {name: _mtime(self.root / f"{name}.csv") for name in METRICS},
                "pending": pending_requests(self.root)}

    def metrics(self, name: str, last: int | None = None) -> dict:
        """The rows of ``<name>.csv`` (the last ``last`` iterations only, if given) as columns, thinned to
        at most MAX_POINTS; rows that are cut off or not numbers (a line being written) are left out, and an
        empty cell (a figure older rows lack, core.logs.MetricsLog widens the header) is a gap."""
        if name not in METRICS:
            raise FacelabError(f"no log {name!r}; the logs are {', '.join(METRICS)}")
        try:
            with open(self.root / f"{name}.csv", newline="") as fh:
                table = list(csv.reader(fh))
        except OSError:
            return {"steps": [], "columns": {}}
        if not table:
            return {"steps": [], "columns": {}}
        header, rows = table[0], []
        for row in table[1:]:
            if len(row) != len(header):
                continue
            try:
                rows.append([float(v) if v else math.nan for v in row])
            except ValueError:
                continue
        if last and rows:
            rows = [r for r in rows if r[0] > rows[-1][0] - last]
        if len(rows) > MAX_POINTS:
            stride = math.ceil(len(rows) / MAX_POINTS)
            rows = rows[-1 - (len(rows) - 1) // stride * stride::stride]  # evenly, ending at the last row
        value = lambda v: v if math.isfinite(v) else None  # JSON has no NaN
        return {"steps": [int(r[0]) for r in rows],
                "columns": {name: [value(r[j]) for r in rows] for j, name in enumerate(header) if j}}

    def preview_png(self) -> bytes | None:
        try:
            return (self.root / "preview.png").read_bytes()
        except OSError:
            return None


class _Handler(PageHandler):
    METHODS = ("GET", "POST")

    def route(self) -> None:
        folder: ModelFolder = self.server.app
        if self.command == "GET" and self.url_path == "/api/state":
            return self.reply_json(HTTPStatus.OK, folder.state())
        if self.command == "GET" and self.url_path == "/api/preview.png":
            png = folder.preview_png()
            return self.send(HTTPStatus.OK, png, PNG) if png is not None else \
                self.not_found(f"{folder.root} has no preview.png yet (the first comes after --preview-every iterations)")
        if self.command == "GET" and self.url_path.startswith("/api/metrics/"):
            try:
                last = int(self.query.get("last") or 0)
                return self.reply_json(HTTPStatus.OK, folder.metrics(self.url_path.rsplit("/", 1)[1], last))
            except ValueError:
                return self.reply_json(HTTPStatus.BAD_REQUEST, {"error": "last is a number of iterations"})
            except FacelabError as exc:
                return self.not_found(str(exc))
        if self.command == "POST" and self.url_path == "/api/request":
            ok, payload = self.json_body()
            if not ok:
                return None
            if not isinstance(payload, dict) or set(payload) != {"what"}:
                return self.reply_json(HTTPStatus.BAD_REQUEST, {"error": 'POST {"what": "save" | "preview" | "stop"}'})
            try:
                send_request(folder.root, payload["what"])
            except FacelabError as exc:
                return self.reply_json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return self.reply_json(HTTPStatus.OK, folder.state())
        return self.not_found()


def make_server(model_dir: str | Path, host: str = "127.0.0.1", port: int = 0) -> LocalServer:
    """The training view's HTTP server for ``model_dir`` (port 0: any free port); call serve_forever()."""
    page = resources.files("facelab.core").joinpath("training_view.html").read_bytes()
    return make_local_server(_Handler, ModelFolder(model_dir), page, "training view", host, port)


def serve(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8767, open_browser: bool = True) -> None:
    """Serve the view of ``model_dir`` until Ctrl-C (the trainer, if any, runs on)."""
    local_serve(make_server(model_dir, host, port), f"of {model_dir}; Ctrl-C stops the view, not the training",
                open_browser)


@contextmanager
def alongside(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8767,
              open_browser: bool = True) -> Iterator[LocalServer]:
    """The view of ``model_dir`` served from a thread of this process while the block (a training) runs."""
    server = make_server(model_dir, host, port)
    threading.Thread(target=server.serve_forever, name="facelab-training-view", daemon=True).start()
    print(f"training view at {server.url} (S: save, P: new preview, Enter: stop and save)", flush=True)
    if open_browser:
        webbrowser.open(server.url)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
