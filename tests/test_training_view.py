"""The live training view: the requests the shared step driver answers (save, preview, stop like Ctrl-C),
the server reading a model folder, and, behind the ``browser`` marker, the page beside a real
``facelab train --view`` in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from facelab.cli import main
from facelab.core.distributed import Group
from facelab.core.errors import FacelabError
from facelab.core.training import run_steps
from facelab.core.training_view import (MAX_POINTS, make_server, pending_requests, request_path, send_request,
                                        write_preview)
from facelab.io.images import decode_image

from conftest import REPO
from test_xseg_editor import CHROMIUM, call, raw


class CountingTrainer:
    """The smallest trainer run_steps drives: it counts, and asks itself for things at given iterations."""

    def __init__(self, model_dir, asks: dict[int, list[str]]):
        self.cfg = SimpleNamespace(target_iter=50, batch_size=1, workers=0, log_every=1, preview_every=1000,
                                   eval_every=0, save_every=0, save_every_minutes=1e9)
        self.model_dir, self.asks = model_dir, asks
        self.iteration, self.group, self.batches = 0, Group(torch.device("cpu")), list(range(100))
        self.metrics = SimpleNamespace(write=lambda step, values: None)
        self.saved, self.previews = [], []

    def step(self, batch):
        for what in self.asks.get(self.iteration, ()):
            send_request(self.model_dir, what)  # as a view would, while this step runs
        return {"loss": 1.0}

    def save(self):
        self.saved.append(self.iteration)

    def write_preview(self):
        self.previews.append(self.iteration)

    def report_eval(self):
        return None


def test_the_step_driver_answers_save_preview_and_stop_after_the_step(tmp_path):
    send_request(tmp_path, "stop")  # left over from an earlier run: not this run's
    trainer = CountingTrainer(tmp_path, {2: ["save", "preview"], 6: ["stop"]})
    losses, stopped = run_steps(trainer, None, "test")
    assert (trainer.saved, trainer.previews) == ([3], [3])  # answered after the step in hand
    assert stopped == "interrupted" and trainer.iteration == 7  # as Ctrl-C: the caller saves next
    assert pending_requests(tmp_path) == []
    with pytest.raises(FacelabError, match="can be asked to save, preview, stop, not 'dance'"):
        send_request(tmp_path, "dance")
    with pytest.raises(FacelabError, match="is not a model folder"):
        send_request(tmp_path / "nope", "save")


@pytest.fixture
def model_dir(tmp_path):
    """A model folder as a running trainer leaves it: logs (the last line cut mid-write), a preview, a save."""
    folder = tmp_path / "model"
    folder.mkdir()
    rows = "".join(f"{i},{3 - i / 1000:.4f},{2 - i / 2000:.4f}\n" for i in range(1, 2501))
    (folder / "losses.csv").write_text("step,total,src_loss\n" + rows + "2501,1.2")
    (folder / "eval.csv").write_text("step,ssim_mean,ssim_std,id_swap_is_src,sharp_swap\n"  # sharp_swap: widened
                                     "100,0.61,0.05,0.25,\n200,0.66,0.04,nan,0.4\n")
    (folder / "state.yaml").write_text(yaml.safe_dump({"iteration": 2000, "saved_at": "2026-12-02 10:00:00"}))
    write_preview(folder, np.full((40, 20, 3), 90, np.uint8), 2500, rows=["src", "dst"])
    return folder


@pytest.fixture
def view(model_dir):
    server = make_server(model_dir, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.url.rstrip("/"), model_dir
    server.shutdown()
    server.server_close()


def test_the_view_serves_the_folder_as_the_trainer_writes_it(view):
    url, folder = view
    status, page = call("GET", url + "/")
    assert status == 200 and b"/api/state" in page and b'id="preview"' in page
    status, state = call("GET", url + "/api/state")
    assert status == 200 and state["saved_iteration"] == 2000 and state["pending"] == []
    assert state["preview"]["rows"] == ["src", "dst"] and state["preview"]["iteration"] == 2500
    assert np.array_equal(decode_image(call("GET", url + "/api/preview.png")[1]), np.full((40, 20, 3), 90, np.uint8))
    losses = call("GET", url + "/api/metrics/losses")[1]
    assert len(losses["steps"]) <= MAX_POINTS and losses["steps"][-1] == 2500  # thinned, ending at the last full row
    assert list(losses["columns"]) == ["total", "src_loss"] and losses["columns"]["total"][-1] == 0.5
    recent = call("GET", url + "/api/metrics/losses?last=100")[1]
    assert recent["steps"] == list(range(2401, 2501))
    evals = call("GET", url + "/api/metrics/eval")[1]
    assert evals["columns"]["id_swap_is_src"] == [0.25, None]  # NaN (no identity figure) comes as null
    assert evals["columns"]["sharp_swap"] == [None, 0.4]  # so does a figure the older rows lack
    assert call("GET", url + "/api/metrics/passwords")[0] == 404
    assert call("GET", url + "/api/metrics/losses?last=x")[0] == 400
    status, state = call("POST", url + "/api/request", {"what": "save"})
    assert status == 200 and state["pending"] == ["save"] and request_path(folder, "save").is_file()
    assert call("POST", url + "/api/request", {"what": "rm -rf"})[0] == 400
    assert call("POST", url + "/api/request", ["stop"])[0] == 400
    assert call("PUT", url + "/api/request", {"what": "stop"})[0] == 405
    assert not request_path(folder, "stop").exists()
    port = url.rsplit(":", 1)[1]
    post = (f"POST /api/request HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://evil.example\r\n"
            f"Content-Type: application/json\r\nContent-Length: 16\r\nConnection: close\r\n\r\n").encode()
    assert raw(url, post + b'{"what": "stop"}')[0] == 403 and not request_path(folder, "stop").exists()


def test_an_empty_folder_is_shown_as_not_started(tmp_path):
    server = make_server(tmp_path, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = server.url.rstrip("/")
    try:
        state = call("GET", url + "/api/state")[1]
        assert state["saved_iteration"] is None and state["preview"]["version"] is None
        assert call("GET", url + "/api/metrics/losses")[1] == {"steps": [], "columns": {}}
        assert "no preview.png yet" in call("GET", url + "/api/preview.png")[1]["error"]
    finally:
        server.shutdown()
        server.server_close()


def test_view_command_serves_the_folder(tmp_path, monkeypatch):
    import facelab.core.training_view as training_view

    served = {}
    monkeypatch.setattr(training_view, "serve", lambda *args, **kw: served.update(args=args, kw=kw))
    assert main(["view", str(tmp_path), "--port", "0", "--no-browser"]) == 0
    assert served == {"args": (str(tmp_path), "127.0.0.1", 0), "kw": {"open_browser": False}}


# ---------------------------------------------------------------- the page beside a real training run
# Behind the ``browser`` marker: it needs Debian's chromium and the ``playwright`` package.

from test_swap_train import facesets  # noqa: E402,F401  (the two real facesets)


@pytest.mark.browser
def test_the_view_beside_facelab_train_shows_it_live_and_stops_it_saved(facesets, tmp_path):  # noqa: F811
    sync_api = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        pytest.skip("needs Chromium (apt-get install chromium)")
    model = tmp_path / "model"
    args = [sys.executable, "-m", "facelab", "train", "--src", str(facesets[0]), "--dst", str(facesets[1]),
            "--model-dir", str(model), "--model", "saehd", "--resolution", "64", "--archi", "df-ud", "--ae-dims", "32",
            "--e-dims", "8", "--d-dims", "8", "--d-mask-dims", "4", "--batch-size", "4", "--workers", "0",
            "--log-every", "1", "--preview-every", "100000", "--eval-every", "10", "--eval-faces", "4",
            "--target-iter", "100000", "--view", "--view-port", "0", "--no-browser"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "stderr.txt", "w+")  # a pipe would fill up with the progress bar and stall the run
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    try:
        line = proc.stdout.readline()
        match = re.search(r"training view at (http://127\.0\.0\.1:\d+/)", line)
        assert match, line + (tmp_path / "stderr.txt").read_text()
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(match.group(1))
            # the curves fill in as the trainer logs: losses every iteration, SSIM and identity every 10
            page.wait_for_function("Number((document.getElementById('chart-losses') || {dataset: {}}).dataset.points) >= 5",
                                   timeout=120_000)
            page.wait_for_function("Number((document.getElementById('chart-eval-id') || {dataset: {}}).dataset.points) >= 1",
                                   timeout=120_000)
            assert page.locator("#chart-eval-ssim").count() == 1
            assert page.locator("#previewinfo").text_content() == "no preview yet"  # --preview-every is far off
            page.keyboard.press("p")  # DeepFaceLab's P: a preview now
            page.wait_for_function("(document.getElementById('preview').dataset.version || '') !== ''", timeout=120_000)
            labels = page.locator("#labels div").all_text_contents()
            assert labels == ["src", "src reconstructed", "src swapped to dst", "dst", "dst reconstructed", "dst swapped to src"]
            assert json.loads((model / "preview.json").read_text())["rows"] == labels
            page.keyboard.press("s")  # S: save now
            page.wait_for_function("document.getElementById('status').textContent.startsWith('saved at iteration')",
                                   timeout=120_000)
            page.keyboard.press("l")
            assert page.locator("#range").text_content() == "history: last 5000 (L)"
            page.screenshot(path=str(tmp_path / "training_view.png"))
            page.keyboard.press("Enter")  # Enter: stop, saving first
            out, _ = proc.communicate(timeout=300)
            browser.close()
        assert errors == []
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    err = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 130, err  # saved and stopped, as on Ctrl-C
    stopped = int(re.search(r"interrupted at iteration (\d+)", out).group(1))
    assert yaml.safe_load((model / "state.yaml").read_text())["iteration"] == stopped > 10
    assert pending_requests(model) == [] and "the training view asked to stop" in err
