"""The interactive merger: per-frame settings, the batch merge that uses them (and resumes by them), the
page's server on real frames with a real (small, untrained) swap network, and, behind the ``browser``
marker, the page in headless Chromium."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest
import torch
import yaml

from facelab.cli import main
from facelab.cli import merge as merge_commands
from facelab.core.checkpoint import save_checkpoint
from facelab.core.config import save_config
from facelab.core.errors import FacelabError
from facelab.io.images import decode_image, read_image
from facelab.merge.config import FRAME_OPTIONS, MergeConfig
from facelab.merge.frame_settings import FrameSettings, log_path, settings_path
from facelab.merge.interactive import make_server
from facelab.merge.merger import FrameMerger, run_merge
from facelab.swap.config import SwapConfig
from facelab.swap.models import build_model
from facelab.swap.predictor import load_predictor

from test_merge import ShiftPredictor, dst_ws  # noqa: F401  (dst_ws: the fixture of real frames and faces)
from test_xseg_editor import CHROMIUM, call, raw

STEMS = [f"{i:05d}" for i in range(10)]
TUNED = {"erode": 6, "blur": 20, "blend": "seamless", "color_transfer": "lct", "face_scale": 4, "sharpen": 30,
         "motion_blur_power": 60}


def test_frame_options_are_merge_options():
    assert set(FRAME_OPTIONS) < {f for f in MergeConfig.__dataclass_fields__}
    assert not {"provenance", "output_format", "segmenter_dir", "batch_size"} & set(FRAME_OPTIONS)


def test_options_carry_forward_to_the_next_frame_with_its_own():
    s = FrameSettings(MergeConfig(erode=2), STEMS)
    s.set(3, {"erode": 5})
    assert [s.config(k).erode for k in range(10)] == [2, 2, 2] + [5] * 7
    assert s.run(5) == (3, 9) and s.run(1) == (0, 2) and s.owner(1) is None and s.owner(7) == 3
    s.set(6, {"blur": 20})  # keeps erode 5 (what frame 6 had) and changes blur from frame 6 on
    assert [(s.config(k).erode, s.config(k).blur) for k in (5, 6, 9)] == [(5, 8), (5, 20), (5, 20)]
    s.apply(4, 4, {"erode": 9})  # frame 4 alone: frame 5 keeps what it had
    assert [s.config(k).erode for k in range(3, 7)] == [5, 9, 5, 5] and s.run(4) == (4, 4)
    s.set(4, {"erode": 5})  # back to what frame 3 passes on: no longer a change of its own
    assert sorted(s.own) == [3, 6]
    s.apply(2, 9, s.values(6))  # every frame from 2 on as frame 6
    assert sorted(s.own) == [2] and s.config(9).blur == 20 and s.config(1).blur == 8
    with pytest.raises(FacelabError, match="erode=999 is out of range"):
        s.set(1, {"erode": 999})
    with pytest.raises(FacelabError, match="batch_size cannot vary by frame"):
        s.set(1, {"batch_size": 2})
    with pytest.raises(FacelabError, match="no frame 11: the merge has 10 frames"):
        s.set(10, {"erode": 1})
    assert sorted(s.own) == [2]  # refused changes change nothing


def test_settings_file_round_trip_and_bad_files_are_one_line(tmp_path, caplog):
    path = settings_path(tmp_path / "merged")
    assert path == tmp_path / "merged_settings.yaml" and log_path(tmp_path / "merged") == tmp_path / "merged_log.tsv"
    s = FrameSettings(MergeConfig(), STEMS, path)
    s.set(4, {"erode": "7", "mask_mode": "learned-src"})  # values from a page or YAML come as strings too
    s.save()
    text = path.read_text()
    assert text.startswith("# facelab merge: per-frame options") and "'00004': {mask_mode: learned-src" in text
    again = FrameSettings.load(path, MergeConfig(blur=3), STEMS)
    assert again.config(4).erode == 7 and again.config(4).blur == 8 and again.config(3).blur == 3  # frame 4 is whole
    assert FrameSettings.load(path, MergeConfig(), STEMS[:3]).own == {}  # frames no longer there: ignored...
    assert "names 1 frames that are not in the input folder" in caplog.text  # ...with a warning
    for content, message in [("frames: [1, 2", "is not valid YAML"), ("erode: 5\n", "must hold 'frames:'"),
                             ("frames:\n  '00001': {erode: 999}\n", r"\(frame 00001\): erode=999 is out of range"),
                             ("frames:\n  '00001': {workers: 2}\n", "workers cannot vary by frame")]:
        path.write_text(content)
        with pytest.raises(FacelabError, match=message):
            FrameSettings.load(path, MergeConfig(), STEMS)


def _settings(output_dir, frames: dict) -> None:
    settings_path(output_dir).write_text(yaml.safe_dump({"frames": frames}))


def test_batch_merge_uses_the_frames_options_and_redoes_only_changed_frames(dst_ws, tmp_path):
    frames = sorted(dst_ws.glob("*.png"))
    base = MergeConfig(workers=1, provenance=False)
    run_merge(ShiftPredictor(), base, dst_ws, tmp_path / "plain")
    run_merge(ShiftPredictor(), MergeConfig(workers=1, provenance=False, **TUNED), dst_ws, tmp_path / "tuned")
    out = tmp_path / "merged"
    _settings(out, {frames[3].stem: TUNED})
    stats = run_merge(ShiftPredictor(), base, dst_ws, out)
    assert (stats.merged, stats.tuned) == (len(frames), len(frames) - 3)
    for k, frame in enumerate(frames):
        expected = tmp_path / ("plain" if k < 3 else "tuned") / frame.name
        assert np.array_equal(read_image(out / frame.name), read_image(expected)), frame.name
    # frame 4 on changes: exactly frames 4.. are merged again, the others stay as they are
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    _settings(out, {frames[3].stem: TUNED, frames[4].stem: {**TUNED, "erode": 0}})
    again = run_merge(ShiftPredictor(), base, dst_ws, out)
    assert (again.merged, again.skipped) == (len(frames) - 4, 4)
    assert [p.name for p in frames if (out / p.name).stat().st_mtime_ns != stamps[p.name]] == [p.name for p in frames[4:]]
    assert run_merge(ShiftPredictor(), base, dst_ws, out).merged == 0  # and then nothing is left to do
    # the command's options changed: the frames that use them (0..2) are redone, the tuned ones are not
    assert run_merge(ShiftPredictor(), MergeConfig(workers=1, provenance=False, blur=30), dst_ws, out).merged == 3


@pytest.fixture(scope="module")
def real_model(tmp_path_factory):
    """A small freshly initialised SAEHD model folder (whole face, 64 px), saved the way the trainer saves:
    a real network, whose output can differ in the last bits with the batch it runs in."""
    folder = tmp_path_factory.mktemp("model")
    cfg = SwapConfig(resolution=64, archi="liae-ud", ae_dims=32, e_dims=8, d_dims=8, d_mask_dims=4)
    torch.manual_seed(0)
    save_checkpoint(folder / "model.safetensors", {"model": build_model(cfg).state_dict(), "iteration": 0})
    save_config(cfg, folder / "config.yaml")
    return folder


def test_a_resumed_merge_runs_the_model_on_the_same_groups(dst_ws, real_model, tmp_path):
    """A frame redone alone (a resume, changed options) sees the model in the batch a full merge gives it
    (alone, this network's output moves by up to 6e-8), so its pixels are the full merge's exactly."""
    predictor = load_predictor(real_model, "cpu")
    cfg = MergeConfig(workers=1, batch_size=2, mask_mode="learned-src*dst", provenance=False)
    run_merge(predictor, cfg, dst_ws, tmp_path / "full")
    name = sorted(dst_ws.glob("*.png"))[1].name  # the second frame of the first group: redone, not alone
    (tmp_path / "full" / name).rename(tmp_path / name)
    assert run_merge(predictor, cfg, dst_ws, tmp_path / "full").merged == 1
    assert np.array_equal(read_image(tmp_path / "full" / name), read_image(tmp_path / name))


@pytest.fixture
def page_server(dst_ws, real_model, tmp_path):
    """The interactive merger's server on a copy of the real frames, with the real network; yields
    (base url, frames folder, output folder)."""
    frames = tmp_path / "frames"
    shutil.copytree(dst_ws, frames)
    out = tmp_path / "merged"
    merger = FrameMerger(load_predictor(real_model, "cpu"), MergeConfig(workers=1, batch_size=2), frames, None, out,
                         tmp_path / "mask")
    server = make_server(merger, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.url.rstrip("/"), frames, out
    server.app.stop_merge(wait=True)
    server.shutdown()
    server.server_close()


def test_the_page_shows_the_frame_the_batch_merge_writes(page_server, real_model, tmp_path, monkeypatch, capsys):
    url, frames, out = page_server
    status, page = call("GET", url + "/")
    assert status == 200 and b"/api/session" in page and b'id="scrub"' in page
    status, session = call("GET", url + "/api/session")
    assert status == 200 and [f["name"] for f in session["frames"]] == sorted(p.name for p in frames.glob("*.png"))
    assert [o["name"] for o in session["options"]] == list(FRAME_OPTIONS) and session["command"]["blur"] == 8
    status, info = call("PUT", url + "/api/frames/2/settings", {"values": TUNED})
    assert status == 200 and info["own"] and info["run"] == [2, len(session["frames"]) - 1] and not info["merged"]
    shown = {k: decode_image(call("GET", url + f"/api/frames/{k}/merged.png")[1]) for k in (1, 2, 4)}
    saved = yaml.safe_load(settings_path(out).read_text())["frames"]
    assert saved == {session["frames"][2]["name"][:-4]: {**{n: session["command"][n] for n in FRAME_OPTIONS}, **TUNED}}
    # `facelab merge` into the same folder uses the saved options: every frame is the one the page showed
    monkeypatch.setattr(merge_commands, "load_model", lambda model_dir, device, precision: load_predictor(real_model))
    assert main(["merge", "--model-dir", str(real_model), "--input-dir", str(frames), "--output-dir", str(out),
                 "--output-mask-dir", str(tmp_path / "mask"), "--workers", "1", "--batch-size", "2"]) == 0
    assert f"{len(session['frames']) - 2} frames with the options tuned" in capsys.readouterr().out
    for k, image in shown.items():
        assert np.array_equal(image, read_image(out / session["frames"][k]["name"])), k
    assert not np.array_equal(shown[1], read_image(frames / session["frames"][1]["name"]))  # a face was pasted
    assert call("GET", url + "/api/frames/2")[1]["merged"]
    original = decode_image(call("GET", url + "/api/frames/2/original.png")[1])
    assert np.array_equal(original, read_image(frames / session["frames"][2]["name"]))
    assert call("GET", url + "/api/frames/2/mask.png")[0] == 200


def test_copying_options_to_a_range_and_refusals(page_server):
    url, _, out = page_server
    call("PUT", url + "/api/frames/1/settings", {"values": {"erode": 3}})
    status, info = call("PUT", url + "/api/frames/1/settings", {"first": 3, "last": 4})  # frames 3..4 as frame 1
    assert status == 200 and info["run"] == [1, 5]  # frames 2 and 5 had frame 1's options anyway
    call("PUT", url + "/api/frames/4/settings", {"values": {"erode": 8}})
    assert call("GET", url + "/api/frames/5")[1]["values"]["erode"] == 8
    call("PUT", url + "/api/frames/1/settings", {"first": 4, "last": 4})
    assert [call("GET", url + f"/api/frames/{k}")[1]["values"]["erode"] for k in range(6)] == [0, 3, 3, 3, 3, 8]
    before = settings_path(out).read_text()
    for body, message in [({"values": {"erode": 999}}, "erode=999 is out of range"),
                          ({"values": {"workers": 2}}, "workers cannot vary by frame"),
                          ({"values": {"mask_mode": "segmenter"}}, "has no XSeg mask"),  # these faces have none
                          ({"first": 4, "last": 2}, "are no range"), ({"erode": 1}, "a change is"),
                          (b"{oops", "not valid JSON")]:
        status, reply = call("PUT", url + "/api/frames/1/settings", body)
        assert status == 400 and message in reply["error"], reply
    assert settings_path(out).read_text() == before  # nothing refused was saved
    assert call("GET", url + "/api/frames/99")[0] == 404 and call("GET", url + "/api/frames/1/nope")[0] == 404
    port = url.rsplit(":", 1)[1]
    get = f"GET /api/session HTTP/1.1\r\nHost: evil.example:{port}\r\nConnection: close\r\n\r\n".encode()
    assert raw(url, get)[0] == 403  # the shared loopback-only rules


class GatedPredictor(ShiftPredictor):
    """Predicts one batch per permit the test gives, so the test decides where the merge stands."""

    def __init__(self):
        super().__init__(resolution=64, face_type="whole")
        self.permits = threading.Semaphore(0)

    def predict(self, faces, src_mask=True, dst_mask=True):
        assert self.permits.acquire(timeout=60), "the test gave no permit"
        return super().predict(faces, src_mask, dst_mask)


def _wait(condition, what: str) -> None:
    """Wait for ``condition()`` (a guard against hanging, not a check of speed)."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_the_page_merges_all_frames_stops_and_resumes(dst_ws, tmp_path):
    out = tmp_path / "merged"
    predictor = GatedPredictor()
    merger = FrameMerger(predictor, MergeConfig(workers=1, batch_size=1, provenance=False), dst_ws, None, out)
    n = len(merger.plan.frames)
    server = make_server(merger, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = server.url.rstrip("/")
    try:
        assert call("GET", url + "/api/merge")[1] == {"running": False, "merged": 0, "todo": n, "frames": n,
                                                      "error": "", "last": None}
        predictor.permits.release(2)
        assert call("POST", url + "/api/merge", {"run": True})[1]["running"]
        _wait(lambda: len(list(out.glob("*.png"))) == 2, "two frames merged")  # the third waits for its permit
        call("POST", url + "/api/merge", {"run": False})
        predictor.permits.release(100)
        _wait(lambda: not call("GET", url + "/api/merge")[1]["running"], "the merge stopped")
        state = call("GET", url + "/api/merge")[1]
        assert state["last"] == {"merged": 2, "skipped": 0, "stopped": True} and state["todo"] == n - 2
        assert sorted(p.name for p in out.iterdir()) == [p.name for p in merger.plan.frames[:2]]
        call("POST", url + "/api/merge", {"run": True})
        _wait(lambda: not call("GET", url + "/api/merge")[1]["running"], "the merge finished")
        assert call("GET", url + "/api/merge")[1]["last"] == {"merged": n - 2, "skipped": 2, "stopped": False}
        assert call("POST", url + "/api/merge", {"go": 1})[0] == 400
    finally:
        server.app.stop_merge(wait=True)
        server.shutdown()
        server.server_close()
    run_merge(ShiftPredictor(64, "whole"), MergeConfig(workers=1, provenance=False), dst_ws, tmp_path / "whole")
    for frame in merger.plan.frames:
        assert np.array_equal(read_image(out / frame.name), read_image(tmp_path / "whole" / frame.name))


def test_interactive_flag_serves_the_page(dst_ws, tmp_path, monkeypatch):
    import facelab.merge.interactive as interactive

    served = {}
    monkeypatch.setattr(merge_commands, "load_model", lambda model_dir, device, precision: ShiftPredictor())
    monkeypatch.setattr(interactive, "serve", lambda merger, host, port, open_browser: served.update(
        merger=merger, host=host, port=port, browser=open_browser))
    assert main(["merge", "--model-dir", "m", "--input-dir", str(dst_ws), "--output-dir", str(tmp_path / "out"),
                 "--interactive", "--port", "0", "--no-browser", "--erode", "4"]) == 0
    assert (served["host"], served["port"], served["browser"]) == ("127.0.0.1", 0, False)
    assert served["merger"].cfg.erode == 4 and served["merger"].output_dir == tmp_path / "out"


# ---------------------------------------------------------------- the page itself, in headless Chromium
# Behind the ``browser`` marker: it needs Debian's chromium and the ``playwright`` package
# (``python3 -m pytest -q -m browser``).


@pytest.fixture
def merge_page(page_server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        pytest.skip("needs Chromium (apt-get install chromium)")
    url, frames, out = page_server
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 900}, device_scale_factor=1)
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        page.goto(url + "/")
        page.wait_for_function("(document.getElementById('view').dataset.shown || '').startsWith('0:merged:')")
        yield page, frames, out
        browser.close()


def _shown(page, frame: int) -> None:
    """Wait until frame ``frame`` (0-based) is on screen with the options the page last asked for."""
    page.wait_for_function(f"""() => {{ const v = document.getElementById('view');
        return v.dataset.shown === v.dataset.want && v.dataset.shown.startsWith('{frame}:merged:'); }}""")


@pytest.mark.browser
def test_tuning_a_frame_with_dfl_keys_then_merging_reproduces_the_screen(merge_page, real_model, tmp_path, monkeypatch):
    page, frames, out = merge_page
    names = sorted(p.name for p in frames.glob("*.png"))
    page.keyboard.press(".")
    page.keyboard.press(".")
    _shown(page, 2)
    assert page.locator("#title").text_content().startswith(f"frame 3 / {len(names)}")
    for key in ["w", "w", "w", "Shift+E", "Shift+R", "c", "3", "Shift+U", "y", "y"]:  # erode +3, blur +5, motion blur...
        page.keyboard.press(key)
    page.wait_for_function("document.getElementById('opt-sharpen').value === '2'")
    _shown(page, 2)
    settings = yaml.safe_load(settings_path(out).read_text())["frames"]
    tuned = {"erode": 3, "blur": 13, "motion_blur_power": 5, "color_transfer": "lct", "blend": "seamless",
             "face_scale": 5, "sharpen": 2}
    assert {k: settings[names[2][:-4]][k] for k in tuned} == tuned and len(settings) == 1
    screen = decode_image(page.locator("#view").screenshot())
    page.screenshot(path=str(tmp_path / "merge_page.png"))
    assert page.locator("#status").text_content().startswith(f"1 face(s); its own options, held by frames 3–{len(names)}")
    # frame 4 on gets a softer edge; then "/" on frame 3 gives frame 4 alone frame 3's options again
    page.keyboard.press(".")
    page.keyboard.press("d")
    page.wait_for_function("document.getElementById('opt-blur').value === '12'")
    page.keyboard.press(",")
    _shown(page, 2)
    page.keyboard.press("/")
    _shown(page, 3)
    page.wait_for_function("document.getElementById('opt-blur').value === '13'")
    page.keyboard.press(",")
    _shown(page, 2)
    assert page.locator("#status").text_content().endswith("not merged with them yet")
    # Shift+. merges every frame with its options, from the page
    page.keyboard.press("Shift+Period")
    page.wait_for_function("document.getElementById('merge').textContent.startsWith('0 of')")
    assert np.array_equal(screen, read_image(out / names[2]))
    page.wait_for_function("document.getElementById('status').textContent.endsWith('merged with them')")
    # and `facelab merge` into a new folder with the saved options writes the same pixels
    fresh = tmp_path / "fresh"
    shutil.copy(settings_path(out), settings_path(fresh))
    monkeypatch.setattr(merge_commands, "load_model", lambda model_dir, device, precision: load_predictor(real_model))
    assert main(["merge", "--model-dir", str(real_model), "--input-dir", str(frames), "--output-dir", str(fresh),
                 "--workers", "1", "--batch-size", "2"]) == 0
    assert np.array_equal(screen, read_image(fresh / names[2]))
    assert np.array_equal(read_image(fresh / names[3]), read_image(out / names[3]))
    saved = yaml.safe_load(settings_path(out).read_text())["frames"]
    assert list(saved) == [names[2][:-4], names[4][:-4]] and saved[names[4][:-4]]["blur"] == 12
    # the scrubber and the original view
    page.locator("#scrub").fill("5")
    page.wait_for_function("document.getElementById('title').textContent.startsWith('frame 6 /')")
    page.keyboard.press("Backquote")
    page.wait_for_function("(document.getElementById('view').dataset.shown || '').startsWith('5:original:')")
    assert np.array_equal(decode_image(page.locator("#view").screenshot()), read_image(frames / names[5]))
    assert page.errors == []
