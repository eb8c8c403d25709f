"""Merge on real frames: every mask mode, blend mode and option, the frame loop, resume, errors, video.

The model here is a stand-in that returns the dst face itself, colour-shifted, with elliptical "learned"
masks: honest for compositing, which only needs a face and masks of the model's shape.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facelab.align.transform import align_matrix, compose, invert, transform_points
from facelab.cli import main
from facelab.core.checkpoint import save_checkpoint
from facelab.core.config import save_config
from facelab.core.errors import FacelabError
from facelab.face.metadata import read_face, write_face
from facelab.faceset.ops import keep_person
from facelab.io.frames import frame_name
from facelab.io.images import list_images, read_image, write_image
from facelab.io.video import iter_frames, probe, write_video
from facelab.cli import merge as merge_commands
from facelab.provenance.signing import identity
from facelab.provenance.verify import verify
from facelab.merge.composite import merge_frame
from facelab.xseg.network import Segmenter
from facelab.merge.config import BLEND_MODES, MASK_MODES, MergeConfig
from facelab.merge.masks import face_mask, mask_inputs
from facelab.merge.merger import _face_inputs, face_motion, plan_merge, prd_segmenter_for, run_merge, super_resolution_for
from facelab.merge.postprocess import motion_kernel
from facelab.merge.video import assemble_video
from facelab.metrics.iou import mask_iou
from facelab.xseg.config import XSegConfig
from facelab.xseg.model_dir import CONFIG_NAME, FORMAT, WEIGHTS_NAME
from facelab.enhance import model_dir as enhancer_dir
from facelab.enhance.apply import load_enhancer
from facelab.enhance.config import EnhancerConfig
from facelab.enhance.network import FaceEnhancer

from conftest import away_from, marked

N_FRAMES = 6


class ShiftPredictor:
    """Returns the dst face colour-shifted (blue down, red up) with soft elliptical masks."""

    def __init__(self, resolution: int = 128, face_type: str = "full"):
        self.resolution, self.face_type = resolution, face_type
        r = resolution
        mask = np.zeros((r, r), np.float32)
        cv2.ellipse(mask, (r // 2, int(r * 0.55)), (int(r * 0.32), int(r * 0.4)), 0, 0, 360, 1.0, -1)
        self.src_mask = cv2.GaussianBlur(mask, (0, 0), r / 40)
        self.dst_mask = np.roll(self.src_mask, r // 16, axis=0)
        self.calls = 0
        self.asked: set[tuple[bool, bool]] = set()  # which learned masks merge asked for

    def predict(self, faces: np.ndarray, src_mask: bool = True, dst_mask: bool = True):
        self.calls += 1
        self.asked.add((src_mask, dst_mask))
        assert faces.dtype == np.uint8 and faces.shape[1:] == (self.resolution, self.resolution, 3)
        out = np.clip(faces.astype(np.float32) / 255.0 * np.array([0.7, 1.0, 1.3], np.float32) + 0.05, 0, 1)
        n = len(faces)
        return (out, np.repeat(self.src_mask[None], n, 0) if src_mask else None,
                np.repeat(self.dst_mask[None], n, 0) if dst_mask else None)


@pytest.fixture(scope="module")
def dst_ws(sample_clips, tmp_path_factory) -> Path:
    """A DeepFaceLab-style dst folder: the first frames of a real clip and their extracted faces."""
    ws = tmp_path_factory.mktemp("merge_ws")
    frames = ws / "data_dst"
    frames.mkdir()
    for index, frame in iter_frames(sample_clips[1]):
        if index >= N_FRAMES:
            break
        write_image(frames / frame_name(index, "png"), frame)
    assert main(["extract", str(frames), "-o", str(frames / "aligned")]) == 0
    assert len(list((frames / "aligned").iterdir())) >= N_FRAMES - 1
    return frames


@pytest.fixture(scope="module")
def one_frame(dst_ws):
    """A real frame with its faces' model output."""
    plan = plan_merge(dst_ws, dst_ws / "aligned")
    k = next(iter(plan.faces_of))
    predictor = ShiftPredictor()
    faces = _face_inputs(plan, [(k, i) for i in plan.faces_of[k]], predictor, "learned-src*dst")[k]
    return read_image(plan.frames[k]), faces, predictor


def _merge(one_frame, **options):
    frame, faces, predictor = one_frame
    return merge_frame(frame, faces, MergeConfig(**options), predictor.face_type, predictor.resolution)


def _check_only_inside(frame, out, mask):
    """The merged frame changed under the mask and nowhere else."""
    diff = np.abs(frame.astype(int) - out).max(2)
    assert (mask > 0).sum() > 500, "no face was pasted"
    assert not ((diff > 0) & (mask == 0)).any(), "pixels outside the mask changed"
    # an untouched face differs by 0; hist-match pulls the shifted colours back most of the way (~2.6 on lp_d19)
    assert diff[mask > 200].mean() > 1.5, "the face under the mask did not change"


@pytest.mark.parametrize("mode", [m for m in MASK_MODES if "segmenter" not in m])  # segmenter: tests/test_xseg.py
def test_mask_modes_paste_only_inside_their_mask(one_frame, mode):
    out, mask = _merge(one_frame, mask_mode=mode, color_transfer="none")
    _check_only_inside(one_frame[0], out, mask)


def test_mask_modes_differ(one_frame):
    areas = {m: int((_merge(one_frame, mask_mode=m, blur=0)[1] > 127).sum()) for m in ("hull", "learned-src", "learned-src*dst*hull")}
    assert areas["learned-src*dst*hull"] < min(areas["hull"], areas["learned-src"])
    assert abs(areas["hull"] - areas["learned-src"]) > 100


def test_segmenter_mask_needs_an_xseg_mask_and_uses_it(one_frame):
    with pytest.raises(FacelabError, match="has no XSeg mask.*facelab xseg apply"):
        _merge(one_frame, mask_mode="segmenter")
    frame, faces, predictor = one_frame
    r = predictor.resolution
    square = np.zeros((r, r), np.float32)
    square[int(0.3 * r) : int(0.7 * r), int(0.3 * r) : int(0.7 * r)] = 1
    faces = [type(f)(**{**f.__dict__, "seg_mask": square}) for f in faces]
    out, mask = merge_frame(frame, faces, MergeConfig(mask_mode="segmenter", blur=0), predictor.face_type, r)
    _check_only_inside(frame, out, mask)
    hull_area = (_merge(one_frame, mask_mode="hull", blur=0)[1] > 127).sum()
    assert 0 < (mask > 127).sum() < hull_area


def test_segmenter_labels_come_from_metadata(dst_ws, tmp_path):
    """Without an applied XSeg mask, a face's labelled polygons (aligned-face pixels) are the segmenter mask."""
    aligned = tmp_path / "aligned"
    shutil.copytree(dst_ws / "aligned", aligned)
    for path in aligned.glob("*.jpg"):
        img, meta = read_face(path)
        s = meta.size
        meta.extra["seg_polygons"] = [[[0.25 * s, 0.25 * s], [0.75 * s, 0.25 * s], [0.75 * s, 0.75 * s], [0.25 * s, 0.75 * s]]]
        write_face(path, img, meta)
    plan = plan_merge(dst_ws, aligned)
    k = next(iter(plan.faces_of))
    items = [(k, i) for i in plan.faces_of[k]]
    faces = _face_inputs(plan, items, ShiftPredictor(), "segmenter")[k]
    r = ShiftPredictor().resolution
    assert faces[0].seg_mask.shape == (r, r) and 0.05 * r * r < faces[0].seg_mask.sum() < 0.5 * r * r
    assert _face_inputs(plan, items, ShiftPredictor(), "hull")[k][0].seg_mask is None  # read only when used


@pytest.mark.parametrize("blend", [b for b in BLEND_MODES if b != "raw-predict"])
def test_blend_modes_change_only_the_face(one_frame, blend):
    out, mask = _merge(one_frame, blend=blend, color_transfer="none")
    _check_only_inside(one_frame[0], out, mask)


def test_blend_modes_differ_as_intended(one_frame):
    frame = one_frame[0].astype(int)
    diffs = {}
    for blend in ("overlay", "hist-match", "seamless", "raw-rgb"):
        out, mask = _merge(one_frame, blend=blend, color_transfer="none")
        diffs[blend] = (np.abs(frame - out).max(2)[mask > 200].mean(), (mask > 0).sum())
    # histogram matching and Poisson cloning both pull the shifted colours back toward the frame
    assert diffs["hist-match"][0] < 0.8 * diffs["overlay"][0]
    assert diffs["seamless"][0] < 0.8 * diffs["overlay"][0]
    assert diffs["raw-rgb"][1] > 1.3 * diffs["overlay"][1]  # the whole square crop


def test_raw_predict_returns_the_face_crop(one_frame):
    out, mask = _merge(one_frame, blend="raw-predict")
    assert out.shape == (128, 128, 3) and mask.shape == (128, 128)


def test_color_transfer_pulls_the_face_toward_the_frame(one_frame):
    frame = one_frame[0].astype(int)
    base_out, mask = _merge(one_frame, color_transfer="none")
    inside = mask > 200
    base = np.abs(frame - base_out)[inside].mean()
    for mode in ("rct", "lct", "mkl", "mkl-m", "idt", "idt-m", "sot-m", "mix-m"):
        out, _ = _merge(one_frame, color_transfer=mode)
        assert np.abs(frame - out)[inside].mean() < 0.7 * base, mode


def test_erode_blur_and_face_scale(one_frame):
    def area(**kw):
        return int((_merge(one_frame, **kw)[1] > 127).sum())

    plain = area(blur=0)
    assert area(blur=0, erode=4) < plain < area(blur=0, erode=-4)
    soft = _merge(one_frame, blur=20)[1]
    assert ((soft > 20) & (soft < 235)).sum() > ((_merge(one_frame, blur=0)[1] > 20) & (_merge(one_frame, blur=0)[1] < 235)).sum()
    assert area(blur=0, face_scale=20) > 1.2 * plain
    assert area(blur=0, mask_mode="learned-src", output_face_type="half") < area(blur=0, mask_mode="learned-src")


def test_a_feathered_mask_falls_to_zero_at_the_crop_edge():
    """A mask that fills the crop (a whole face's chin and neck reach its border) is feathered inside the
    crop: 0 on its edge, so pasted back it ends softly instead of in a straight cut; unblurred it is kept."""
    from facelab.merge.masks import erode_blur

    full = np.ones((64, 64), np.float32)
    for blur in (1, 4, 8, 9):
        soft = erode_blur(full, 0, blur)
        edge = np.concatenate([soft[0], soft[-1], soft[:, 0], soft[:, -1]])
        assert edge.max() == 0 and soft[32, 32] == 1, blur
    assert erode_blur(full, 0, 0).min() == 1


def test_sharpen_and_degrade_options(one_frame):
    frame = one_frame[0]
    base, mask = _merge(one_frame)
    sharp, _ = _merge(one_frame, sharpen=60)
    assert np.abs(sharp.astype(int) - base)[mask > 200].mean() > 0.5
    assert np.array_equal(sharp[mask == 0], frame[mask == 0])
    for option in ("denoise_power", "bicubic_degrade_power", "color_degrade_power"):
        out, _ = _merge(one_frame, **{option: 50})
        assert np.abs(out.astype(int) - base)[mask == 0].mean() > 0.2, option  # they act on the frame by design


def test_config_ranges_and_choices_are_checked():
    with pytest.raises(FacelabError, match="erode=999 is out of range"):
        MergeConfig(erode=999)
    assert main(["merge", "--model-dir", "m", "--input-dir", "i", "--output-dir", "o", "--blend", "nope"]) == 2


def test_run_merge_writes_every_frame_and_resumes(dst_ws, tmp_path):
    out_dir, mask_dir = tmp_path / "merged", tmp_path / "mask"
    stats = run_merge(ShiftPredictor(), MergeConfig(workers=1, batch_size=4), dst_ws, out_dir, mask_dir)
    frames = sorted(dst_ws.glob("*.png"))
    assert stats.merged == len(frames) and stats.faces >= len(frames) - 1
    assert [p.name for p in sorted(out_dir.iterdir())] == [p.name for p in frames]
    for src in frames:
        a, b, m = read_image(src), read_image(out_dir / src.name), cv2.imread(str(mask_dir / src.name), 0)
        a = marked(a) if m.any() else a  # a frame with a face carries the mark
        assert not ((np.abs(a.astype(int) - b).max(2) > 0) & away_from(m)).any()
    # resume: nothing to do, nothing rewritten; one missing frame is redone
    stamp = (out_dir / frames[0].name).stat().st_mtime_ns
    (out_dir / frames[2].name).unlink()
    again = run_merge(ShiftPredictor(), MergeConfig(workers=1), dst_ws, out_dir, mask_dir)
    assert (again.merged, again.skipped) == (1, len(frames) - 1)
    assert (out_dir / frames[0].name).stat().st_mtime_ns == stamp
    assert run_merge(ShiftPredictor(), MergeConfig(workers=1), dst_ws, out_dir, mask_dir, overwrite=True).merged == len(frames)


@pytest.mark.parametrize("mode,asked", [("hull", (False, False)), ("learned-dst", (False, True)),
                                        ("learned-src", (True, False)), ("learned-src*dst*hull", (True, True))])
def test_merge_predicts_only_the_masks_its_mode_uses(dst_ws, tmp_path, mode, asked):
    predictor = ShiftPredictor()
    run_merge(predictor, MergeConfig(workers=1, mask_mode=mode), dst_ws, tmp_path / "out")
    assert predictor.asked == {asked}


class FailingPredictor(ShiftPredictor):
    """Fails on its second batch, as a model running out of memory would."""

    def predict(self, faces, src_mask=True, dst_mask=True):
        if self.calls == 1:
            raise FacelabError("out of memory on batch 2")
        return super().predict(faces, src_mask, dst_mask)


def test_model_error_in_the_prefetch_thread_reaches_the_caller(dst_ws, tmp_path):
    threads = cv2.getNumThreads()
    with pytest.raises(FacelabError, match="out of memory on batch 2"):
        run_merge(FailingPredictor(), MergeConfig(workers=1, batch_size=1), dst_ws, tmp_path / "out")
    written = sorted((tmp_path / "out").iterdir())
    assert 1 <= len(written) <= 2  # the first batch's frame was composited while batch 2 ran (or failed)
    assert cv2.getNumThreads() == threads  # in-process compositing gives OpenCV its threads back


def test_frame_without_face_is_copied_and_pool_matches_in_process(dst_ws, tmp_path):
    frames = tmp_path / "frames"
    shutil.copytree(dst_ws, frames)
    blank = frames / "09999.png"
    write_image(blank, np.full_like(read_image(frames / "00001.png"), 40))
    # byte for byte (without provenance: a C2PA signature differs on every signing)
    run_merge(ShiftPredictor(), MergeConfig(workers=2, output_format="jpg", provenance=False), frames, tmp_path / "pool")
    run_merge(ShiftPredictor(), MergeConfig(workers=1, output_format="jpg", provenance=False), frames, tmp_path / "one")
    assert (tmp_path / "pool" / "09999.jpg").is_file()
    for p in sorted((tmp_path / "one").iterdir()):
        assert p.read_bytes() == (tmp_path / "pool" / p.name).read_bytes()
    run_merge(ShiftPredictor(), MergeConfig(workers=1), frames, tmp_path / "png")
    assert (tmp_path / "png" / "09999.png").read_bytes() == blank.read_bytes()  # no face: not synthetic, not signed


def test_only_the_kept_person_is_swapped_in_a_group_scene(fetched_photos, people, tmp_path):
    """Real footage with several people: two frames of a 5-person photo (6 faces found at full size: a
    painted face on a poster too). After `faceset keep --like` a photo of Thomas Middleditch from another
    picture, merge changes his face and leaves the other faces and everything else untouched (DeepFaceLab
    users delete the other faces by hand)."""
    frames, ref = tmp_path / "data_dst", tmp_path / "ref"
    frames.mkdir()
    ref.mkdir()
    photo = read_image(fetched_photos / "group5_cast.jpg")
    for i in range(2):
        write_image(frames / frame_name(i, "png"), photo)
    write_image(ref / "him.jpg", people["middleditch"][1])  # cropped from the 2-person photo
    assert main(["extract", str(frames), "-o", str(frames / "aligned"), "--detect-size", "0"]) == 0
    assert len(list_images(frames / "aligned")) == 12
    assert main(["extract", str(ref), "-o", str(tmp_path / "ref_aligned")]) == 0
    assert main(["faceset", "keep", str(frames / "aligned"), "--like", str(tmp_path / "ref_aligned")]) == 0
    kept = [read_face(p)[1] for p in list_images(frames / "aligned")]
    others = [read_face(p)[1] for p in list_images(tmp_path / "data_dst" / "aligned_others")]
    assert len(kept) == 2 and len(others) == 10
    run_merge(ShiftPredictor(), MergeConfig(workers=1), frames, tmp_path / "merged", tmp_path / "mask")
    for i in range(2):
        diff = np.abs(read_image(tmp_path / "merged" / frame_name(i, "png")).astype(int) - marked(photo)).max(2) > 0
        his = next(m for m in kept if m.source_frame == i or m.source_filename == frame_name(i, "png"))
        x0, y0, x1, y1 = (int(v) for v in his.source_rect)
        pad = (x1 - x0) // 2
        region = np.zeros_like(diff)
        region[max(0, y0 - pad):y1 + pad, max(0, x0 - pad):x1 + pad] = True
        assert diff[y0:y1, x0:x1].mean() > 0.5 and not (diff & ~region).any()
        assert his.source_rect[0] == sorted(m.source_rect[0] for m in others + kept if m.source_filename ==
                                            his.source_filename)[2]  # the third face from the left


def test_one_shot_swap_replaces_only_the_dst_person(fetched_photos, people, tmp_path, monkeypatch):
    """`facelab swap --dst-person` on a real two-person clip (Amanda Crew and Thomas Middleditch): only
    his face is merged; her face and the rest of every frame stay as they were. The training step is
    replaced by ShiftPredictor (this test is about which faces the workflow touches)."""
    from facelab.swap import predictor as swap_predictor
    from facelab.swap import train as swap_train

    photo = cv2.resize(read_image(fetched_photos / "group2_pair.jpg"), (1280, 853))[60:780]
    clip = tmp_path / "dst.mp4"
    write_video(clip, [photo] * 5, 25)
    (tmp_path / "src").mkdir()
    (tmp_path / "him").mkdir()
    write_image(tmp_path / "src" / "obama.jpg", people["obama"][0])
    write_image(tmp_path / "him" / "cast.jpg", people["middleditch"][0])  # from the other photo
    monkeypatch.setattr(swap_train, "train", lambda *args: swap_train.TrainResult(0, {}, 0.0, 0.0, "target"))
    monkeypatch.setattr(swap_predictor, "load_predictor", lambda *args: ShiftPredictor())
    assert main(["swap", str(tmp_path / "src"), str(clip), "-o", str(tmp_path / "out.mp4"), "--dst-person",
                 str(tmp_path / "him"), "--workspace", str(tmp_path / "ws")]) == 0
    dst = tmp_path / "ws" / "data_dst"
    kept = [read_face(p)[1] for p in list_images(dst / "aligned")]
    others = [read_face(p)[1] for p in list_images(dst / "aligned_others")]
    assert len(kept) == 5 and len(others) >= 3  # her face is found in most frames
    assert all(k.source_rect[0] > o.source_rect[0] for k in kept for o in others)  # he is on the right
    for frame in list_images(dst):
        diff = np.abs(read_image(dst / "merged" / frame.name).astype(int) - marked(read_image(frame))).max(2) > 0
        x0 = int(min(k.source_rect[0] for k in kept)) - 60
        assert diff[:, x0:].any() and not diff[:, :x0].any()
    with pytest.raises(FacelabError, match="no face of .* looks like the person of"):
        keep_person(dst / "aligned", tmp_path / "ws" / "data_src" / "aligned")  # Obama is not in the clip


def test_bad_inputs_give_one_clear_line(dst_ws, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for p in sorted(dst_ws.glob("*.png")):
        shutil.copy(p, frames / p.name)
    with pytest.raises(FacelabError, match="no extracted faces"):
        run_merge(ShiftPredictor(), MergeConfig(workers=1), frames, tmp_path / "o")
    shutil.copytree(dst_ws / "aligned", frames / "aligned")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(FacelabError, match="cannot write to"):
        run_merge(ShiftPredictor(), MergeConfig(workers=1), frames, blocker / "out")
    last = sorted(frames.glob("*.png"))[-1]
    h, w = read_image(last).shape[:2]
    write_image(last, cv2.resize(read_image(last), (w // 2, h // 2)))
    with pytest.raises(FacelabError, match=f"all frames of a video must have one size|extracted from a {w}x{h}"):
        run_merge(ShiftPredictor(), MergeConfig(workers=1), frames, tmp_path / "o")


def test_merge_and_preview_commands(dst_ws, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(merge_commands, "load_model", lambda model_dir, device, precision: ShiftPredictor())
    base = ["merge", "--model-dir", str(tmp_path / "model"), "--input-dir", str(dst_ws)]
    assert main(base + ["--output-dir", str(tmp_path / "merged"), "--preview", "2",
                        "--preview-output", str(tmp_path / "p.png")]) == 0
    panel, frame = read_image(tmp_path / "p.png"), read_image(sorted(dst_ws.glob("*.png"))[0])
    assert panel.shape == (frame.shape[0], 3 * frame.shape[1], 3)  # original | merged | mask
    cfg = tmp_path / "merge.yaml"
    cfg.write_text("blend: seamless\nworkers: 1\noutput_format: jpg\n")
    assert main(base + ["--output-dir", str(tmp_path / "merged"), "--output-mask-dir", str(tmp_path / "mask"),
                        "--config", str(cfg)]) == 0
    assert len(list((tmp_path / "merged").glob("*.jpg"))) == N_FRAMES
    assert "merged 6 frames" in capsys.readouterr().out
    assert main(base + ["--output-dir", str(tmp_path / "m2"), "--preview", "777"]) == 2
    assert "no frame '777'" in capsys.readouterr().err


def test_merged_faces_carry_the_mark_and_their_frames_and_video_a_signed_manifest(dst_ws, tmp_path, monkeypatch,
                                                                                   capsys):
    """Provenance by default: every merged frame with a face carries the invisible mark (outside the face
    nothing else changes) and a valid facelab manifest, and so does the video; --no-provenance warns."""
    monkeypatch.setattr(merge_commands, "load_model", lambda model_dir, device, precision: ShiftPredictor())
    base = ["merge", "--model-dir", str(tmp_path / "model"), "--input-dir", str(dst_ws), "--workers", "2"]
    assert main(base + ["--output-dir", str(tmp_path / "merged"), "--output-mask-dir", str(tmp_path / "mask")]) == 0
    out = capsys.readouterr().out
    assert "invisible mark and a signed C2PA manifest" in out and "facelab verify" in out
    for frame in sorted(dst_ws.glob("*.png")):
        merged = tmp_path / "merged" / frame.name
        report = verify(merged)
        assert report.by_facelab and report.valid and report.trusted and report.action == "face swap", report
        assert report.watermark and report.watermark_id == identity().mark_id, report
        mask = cv2.imread(str(tmp_path / "mask" / frame.name), 0)
        changed = np.abs(marked(read_image(frame)).astype(int) - read_image(merged)).max(2) > 0
        assert not (changed & away_from(mask)).any()  # away from the face: the frame and the mark, nothing else
    assert main(["video", "--frames", str(tmp_path / "merged"), "--fps", "25", "-o", str(tmp_path / "v.mp4")]) == 0
    assert "signed C2PA manifest" in capsys.readouterr().out
    video = verify(tmp_path / "v.mp4")
    assert video.by_facelab and video.valid and video.watermark, video
    assert main(base + ["--output-dir", str(tmp_path / "plain"), "--no-provenance"]) == 0
    captured = capsys.readouterr()
    assert "warning: --no-provenance" in captured.err and "EU AI Act" in captured.err and "mark" not in captured.out
    plain = verify(sorted((tmp_path / "plain").iterdir())[0])
    assert not plain.manifest and not plain.watermark, plain


def test_bad_model_dir_is_one_line(dst_ws, tmp_path, capsys):
    rc = main(["merge", "--model-dir", str(tmp_path / "nomodel"), "--input-dir", str(dst_ws),
               "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("facelab: error:") and err.count("\n") == 1


def test_video_keeps_frame_count_duration_and_audio(sample_clips, dst_ws, tmp_path):
    src = sample_clips[1]
    info = probe(src)
    frames = tmp_path / "frames"
    frames.mkdir()
    for index, frame in iter_frames(src):
        write_image(frames / frame_name(index, "jpg"), frame[::2, ::2], 90)
    assert main(["video", "--frames", str(frames), "--like", str(src), "-o", str(tmp_path / "out.mp4")]) == 0
    out = probe(tmp_path / "out.mp4")
    assert abs(out.frame_count - info.frame_count) <= 1 and abs(out.duration - info.duration) < 0.1
    assert out.fps == info.fps and out.has_audio and info.has_audio
    silent = tmp_path / "silent.mp4"
    write_video(silent, (f for _, f in iter_frames(src)), info.fps)
    assemble_video(frames, tmp_path / "quiet.mp4", like=silent)
    assert not probe(tmp_path / "quiet.mp4").has_audio


def test_video_refuses_mixed_sizes(tmp_path, capsys):
    frames = tmp_path / "f"
    frames.mkdir()
    write_image(frames / "00001.png", np.zeros((64, 64, 3), np.uint8))
    write_image(frames / "00002.png", np.zeros((32, 64, 3), np.uint8))
    assert main(["video", "--frames", str(frames), "--fps", "25", "-o", str(tmp_path / "v.mp4")]) == 2
    assert "00002.png is 64x32" in capsys.readouterr().err
    assert not (tmp_path / "v.mp4").exists()


# ------------------------------------------------------------------- XSeg on the predicted face (XSeg-prd)
def save_segmenter(folder: Path, face_type: str = "whole", resolution: int = 64, bias: float | None = None) -> Path:
    """An untrained tiny segmenter saved as `facelab xseg train` saves one; ``bias`` makes it predict a
    constant logit everywhere (+ = all face, - = no face)."""
    net = Segmenter(resolution, base_channels=4)
    if bias is not None:
        with torch.no_grad():
            net.head.weight.zero_()
            net.head.bias.fill_(bias)
    folder.mkdir(parents=True)
    save_checkpoint(folder / WEIGHTS_NAME, {"format": FORMAT, "iteration": 0, "model": net.state_dict()})
    save_config(XSegConfig(resolution=resolution, face_type=face_type, base_channels=4), folder / CONFIG_NAME)
    return folder


def test_mask_mode_table_names_what_each_mode_needs(dst_ws, tmp_path):
    assert set(MASK_MODES) >= {"segmenter-prd", "segmenter-prd*segmenter"}
    assert mask_inputs("hull") == ("hull",) and mask_inputs("segmenter-prd") == ("segmenter-prd",)
    with pytest.raises(FacelabError, match="unknown mask mode 'nope'"):
        mask_inputs("nope")
    plan = plan_merge(dst_ws, dst_ws / "aligned")  # these faces have no applied XSeg mask
    k = next(iter(plan.faces_of))
    items = [(k, i) for i in plan.faces_of[k]]
    predictor = ShiftPredictor()
    hull = _face_inputs(plan, items, predictor, "hull")[k][0]
    assert predictor.asked == {(False, False)} and hull.seg_mask is None and hull.prd_seg_mask is None
    cfg = MergeConfig(mask_mode="segmenter-prd", segmenter_dir=str(save_segmenter(tmp_path / "xseg", bias=20.0)))
    faces = _face_inputs(plan, items, predictor, cfg.mask_mode, prd_segmenter_for(cfg, predictor))[k]
    assert predictor.asked == {(False, False)} and faces[0].seg_mask is None and faces[0].prd_seg_mask is not None
    merge_frame(read_image(plan.frames[k]), faces, cfg, predictor.face_type, predictor.resolution)  # no dst mask needed
    with pytest.raises(FacelabError, match="has no XSeg mask"):  # the product with the dst mask does need one
        merge_frame(read_image(plan.frames[k]), faces, MergeConfig(mask_mode="segmenter-prd*segmenter"),
                    predictor.face_type, predictor.resolution)


@pytest.mark.parametrize("bias", [20.0, -20.0])
def test_segmenter_prd_pastes_where_the_segmenter_sees_face(dst_ws, tmp_path, bias):
    """A whole-face segmenter covers the full-face model crop: all face pastes the whole crop, no face nothing."""
    seg = save_segmenter(tmp_path / "xseg", bias=bias)
    out_dir, mask_dir = tmp_path / "out", tmp_path / "mask"
    run_merge(ShiftPredictor(), MergeConfig(workers=1, mask_mode="segmenter-prd", segmenter_dir=str(seg), blur=0,
                                            color_transfer="none", provenance=False), dst_ws, out_dir, mask_dir)
    raw = tmp_path / "raw"  # the whole square crop, for comparison
    run_merge(ShiftPredictor(), MergeConfig(workers=1, blend="raw-rgb", color_transfer="none"), dst_ws, raw / "o", raw / "m")
    for src in sorted(dst_ws.glob("*.png")):
        frame, out, mask = read_image(src), read_image(out_dir / src.name), cv2.imread(str(mask_dir / src.name), 0)
        assert not ((np.abs(frame.astype(int) - out).max(2) > 0) & (mask == 0)).any()  # outside: untouched
        if bias < 0:
            assert not mask.any() and np.array_equal(out, frame)
        else:
            square = cv2.imread(str(raw / "m" / src.name), 0) > 127
            assert mask_iou(mask > 127, square) > 0.98


def test_segmenter_prd_follows_the_merge_precision(dst_ws, tmp_path):
    """In a bf16 merge the segmenter runs under bf16 autocast too (1.7x faster at 256 px, docs/merge.md);
    its face probabilities stay within a few hundredths of fp32 on real faces."""
    seg = save_segmenter(tmp_path / "xseg")  # random weights: a real net's range of activations
    plan = plan_merge(dst_ws, dst_ws / "aligned")
    items = [(k, i) for k in plan.faces_of for i in plan.faces_of[k]][:4]
    cfg = MergeConfig(mask_mode="segmenter-prd", segmenter_dir=str(seg))
    masks = {}
    for precision in ("fp32", "bf16"):
        predictor = ShiftPredictor()
        predictor.precision = precision
        segmenter = prd_segmenter_for(cfg, predictor)
        assert segmenter.precision == precision
        faces = _face_inputs(plan, items, predictor, cfg.mask_mode, segmenter)
        masks[precision] = np.stack([f.prd_seg_mask for fs in faces.values() for f in fs])
    diff = np.abs(masks["fp32"] - masks["bf16"])
    assert masks["fp32"].std() > 0.01 and diff.mean() < 0.01 and diff.max() < 0.05, (diff.mean(), diff.max())


def test_segmenter_prd_warps_between_face_types_and_resolutions(dst_ws, tmp_path, monkeypatch):
    """A 64 px half-face segmenter that always finds face in one off-centre box of its own frame: the mask
    lands on that box's place in the 128 px full-face model crop, mapped point by point through the frame."""
    seg = save_segmenter(tmp_path / "xseg", face_type="half", resolution=64)
    box = (slice(8, 40), slice(20, 60))  # rows, columns of the segmenter's frame

    def forward(self, x):
        assert x.shape[1:] == (3, 64, 64) and 0 <= float(x.min()) and float(x.max()) <= 1
        logits = torch.full((len(x), 1, 64, 64), -20.0)
        logits[:, :, box[0], box[1]] = 20.0
        return logits

    monkeypatch.setattr(Segmenter, "forward", forward)
    plan = plan_merge(dst_ws, dst_ws / "aligned")
    items = [(k, i) for k in plan.faces_of for i in plan.faces_of[k]][:3]
    predictor = ShiftPredictor(128, "full")
    cfg = MergeConfig(mask_mode="segmenter-prd", segmenter_dir=str(seg))
    faces = [f for fs in _face_inputs(plan, items, predictor, cfg.mask_mode, prd_segmenter_for(cfg, predictor)).values()
             for f in fs]
    ys, xs = np.mgrid[0:128, 0:128]
    crop_px = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    for face in faces:
        frame_px = transform_points(crop_px, invert(face.crop_mat))
        seg_px = np.round(transform_points(frame_px, align_matrix(face.source_landmarks, 64, "half"))).astype(int)
        inside = (seg_px[:, 1] >= 8) & (seg_px[:, 1] < 40) & (seg_px[:, 0] >= 20) & (seg_px[:, 0] < 60)
        expected = inside.reshape(128, 128)
        assert 200 < expected.sum() < 0.9 * 128 * 128
        assert mask_iou(face.prd_seg_mask > 0.5, expected) > 0.9


def test_segmenter_prd_errors_are_one_line(dst_ws, tmp_path, monkeypatch, capsys):
    with pytest.raises(FacelabError, match="--segmenter-dir.*facelab xseg train"):
        run_merge(ShiftPredictor(), MergeConfig(workers=1, mask_mode="segmenter-prd"), dst_ws, tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FacelabError, match="--segmenter-dir: .*empty is not an XSeg model.*facelab xseg train"):
        run_merge(ShiftPredictor(), MergeConfig(workers=1, mask_mode="segmenter-prd*segmenter",
                                                segmenter_dir=str(tmp_path / "empty")), dst_ws, tmp_path / "o")
    assert not (tmp_path / "o").exists()  # refused before any frame
    monkeypatch.setattr(merge_commands, "load_model", lambda model_dir, device, precision: ShiftPredictor())
    base = ["merge", "--model-dir", str(tmp_path / "model"), "--input-dir", str(dst_ws), "--output-dir",
            str(tmp_path / "merged"), "--mask-mode", "segmenter-prd", "--preview", "2"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--segmenter-dir" in err and "facelab xseg train" in err
    seg = save_segmenter(tmp_path / "xseg", bias=20.0)
    assert main(base + ["--segmenter-dir", str(seg), "--preview-output", str(tmp_path / "p.png")]) == 0
    h, w = read_image(sorted(dst_ws.glob("*.png"))[0]).shape[:2]
    assert read_image(tmp_path / "p.png").shape == (h, 3 * w, 3)
    with pytest.raises(SystemExit):
        main(["merge", "--help"])
    assert "--segmenter-dir" in capsys.readouterr().out


# ------------------------------------------------------------------- learned-src*dst*segmenter-prd*segmenter
def test_four_way_mask_mode_is_the_product_of_all_four(dst_ws, tmp_path, monkeypatch):
    """DeepFaceLab's learned-prd*learned-dst*XSeg-prd*XSeg-dst: all four masks are made, and the face is pasted
    only where every one of them sees face (their product), so less than either pair of them."""
    aligned = tmp_path / "aligned"
    shutil.copytree(dst_ws / "aligned", aligned)
    for path in aligned.glob("*.jpg"):  # a labelled XSeg-dst region: the upper middle of each aligned face
        img, meta = read_face(path)
        s = meta.size
        meta.extra["seg_polygons"] = [[[0.2 * s, 0.1 * s], [0.8 * s, 0.1 * s], [0.8 * s, 0.6 * s], [0.2 * s, 0.6 * s]]]
        write_face(path, img, meta)
    seg = save_segmenter(tmp_path / "xseg")

    def forward(self, x):  # XSeg-prd sees face in the left two thirds of its frame only
        logits = torch.full((len(x), 1, *x.shape[2:]), -20.0)
        logits[..., : 2 * x.shape[3] // 3] = 20.0
        return logits

    monkeypatch.setattr(Segmenter, "forward", forward)
    mode = "learned-src*dst*segmenter-prd*segmenter"
    cfg = MergeConfig(mask_mode="learned-prd*learned-dst*XSeg-prd*XSeg-dst", segmenter_dir=str(seg), blur=0,
                      color_transfer="none")
    assert cfg.mask_mode == mode and mask_inputs(mode) == ("learned-src", "learned-dst", "segmenter-prd", "segmenter")
    plan = plan_merge(dst_ws, aligned)
    k = next(iter(plan.faces_of))
    predictor = ShiftPredictor()
    (face,) = _face_inputs(plan, [(k, i) for i in plan.faces_of[k]], predictor, mode, prd_segmenter_for(cfg, predictor))[k]
    assert predictor.asked == {(True, True)} and face.seg_mask is not None and face.prd_seg_mask is not None
    product = face.src_mask * face.dst_mask * face.seg_mask * face.prd_seg_mask
    product[product < 1 / 255] = 0
    landmarks = transform_points(face.source_landmarks, face.crop_mat)
    r = predictor.resolution
    assert np.allclose(face_mask(mode, r, landmarks, "full", face.src_mask, face.dst_mask, face.seg_mask,
                                 face.prd_seg_mask), product, atol=1e-6)
    frame = read_image(plan.frames[k])
    out, mask = merge_frame(frame, [face], cfg, predictor.face_type, r)
    _check_only_inside(frame, out, mask)
    areas = {m: int((merge_frame(frame, [face], MergeConfig(mask_mode=m, blur=0, color_transfer="none"),
                                 predictor.face_type, r)[1] > 127).sum())
             for m in ("learned-src*dst", "segmenter-prd*segmenter")}
    assert 0 < (mask > 127).sum() < 0.9 * min(areas.values())


# ------------------------------------------------------------------- motion blur
def test_motion_kernel_is_a_streak_along_the_movement():
    assert motion_kernel(np.array([0.6, 0.3])) is None  # under a pixel: no blur
    for vector in ([8.0, 0.0], [0.0, -5.0], [6.0, 6.0], [3.3, -7.1]):
        kernel = motion_kernel(np.array(vector))
        assert kernel.sum() == pytest.approx(1.0, abs=1e-5) and kernel.shape[0] % 2 == 1
        ys, xs = np.nonzero(kernel > 1e-4)
        c = kernel.shape[0] // 2
        points = np.stack([xs - c, ys - c], 1).astype(float)
        direction = np.array(vector) / np.hypot(*vector)
        along, across = points @ direction, points @ np.array([-direction[1], direction[0]])
        assert np.abs(across).max() <= 1.0  # one pixel wide, antialiased
        assert along.max() - along.min() == pytest.approx(np.hypot(*vector), abs=1.5)  # as long as the movement


def _moving_ws(dst_ws: Path, root: Path, step: tuple[float, float], n: int = 5) -> Path:
    """A dst folder of ``n`` frames in which the first real frame's face moves by ``step`` pixels a frame: the
    frame is shifted and each face's metadata with it (the aligned face is the same)."""
    plan = plan_merge(dst_ws, dst_ws / "aligned")
    k = next(iter(plan.faces_of))
    frame, i = read_image(plan.frames[k]), plan.faces_of[k][0]
    img, meta = read_face(dst_ws / "aligned" / plan.faceset.names[i])
    (root / "aligned").mkdir(parents=True)
    for t in range(n):
        shift = np.array(step) * (t - n // 2)
        move = np.array([[1, 0, shift[0]], [0, 1, shift[1]]], np.float64)
        name = frame_name(t, "png")
        write_image(root / name, cv2.warpAffine(frame, move, frame.shape[1::-1], borderMode=cv2.BORDER_REPLICATE))
        moved = type(meta)(**{**meta.__dict__, "source_filename": name, "source_frame": None,
                              "source_landmarks": meta.source_landmarks + shift,
                              "source_rect": [v + shift[j % 2] for j, v in enumerate(meta.source_rect)],
                              "image_to_face": compose(meta.image_to_face, invert(move))})
        write_face(root / "aligned" / f"{Path(name).stem}_0.jpg", img, moved)
    return root


def _gradients(image: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Mean absolute horizontal and vertical differences of ``image`` inside ``mask``."""
    g = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    return (float(np.abs(np.diff(g, axis=1))[mask[:, 1:]].mean()), float(np.abs(np.diff(g, axis=0))[mask[1:]].mean()))


@pytest.mark.parametrize("step", [(6.0, 0.0), (0.0, 6.0), (0.0, 0.0)], ids=["sideways", "down", "still"])
def test_motion_blur_smears_the_face_along_its_movement(dst_ws, tmp_path, step):
    """The face of the middle frame, moving 6 px a frame: merged with motion blur it loses more detail along the
    movement than across it; a still face merges exactly as without motion blur."""
    ws = _moving_ws(dst_ws, tmp_path / "ws", step)
    plan = plan_merge(ws, ws / "aligned")
    k = len(plan.frames) // 2
    predictor = ShiftPredictor()
    faces = _face_inputs(plan, [(k, i) for i in plan.faces_of[k]], predictor, "hull")[k]
    expected = faces[0].crop_mat[:, :2] @ (2 * np.array(step))  # previous to next frame, in crop pixels
    assert np.allclose(faces[0].motion, expected, atol=1e-3)
    frame = read_image(plan.frames[k])
    still, mask = merge_frame(frame, faces, MergeConfig(color_transfer="none", provenance=False), "full", 128)
    blurred, _ = merge_frame(frame, faces, MergeConfig(color_transfer="none", motion_blur_power=100), "full", 128)
    if step == (0.0, 0.0):
        assert np.array_equal(blurred, still) and not np.any(faces[0].motion)
        return
    inside = cv2.erode((mask > 250).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    (sx, sy), (bx, by) = _gradients(still, inside), _gradients(blurred, inside)
    along, across = (bx / sx, by / sy) if step[0] else (by / sy, bx / sx)
    # a streak also softens what crosses it at a slant, but what runs across the movement loses far less
    assert along < 0.75 and along < 0.85 * across, (along, across)  # measured: 0.57 / 0.79 sideways, 0.47 / 0.77 down
    assert np.array_equal(blurred[mask == 0], still[mask == 0])  # the frame around the face is untouched


def test_motion_ignores_a_neighbour_face_that_is_someone_else(dst_ws, tmp_path):
    """A face that jumps farther than its own width from one frame to the next (a cut, another person) is no
    movement: that side counts as missing and the other side's step counts twice."""
    ws = _moving_ws(dst_ws, tmp_path / "ws", (4.0, 0.0), n=3)
    last = sorted((ws / "aligned").glob("*.jpg"))[-1]
    img, meta = read_face(last)
    far = np.array([[1, 0, 400.0], [0, 1, 0]])
    write_face(last, img, type(meta)(**{**meta.__dict__, "source_landmarks": meta.source_landmarks + [400.0, 0.0],
                                        "image_to_face": compose(meta.image_to_face, invert(far))}))
    plan = plan_merge(ws, ws / "aligned")
    assert np.allclose(face_motion(plan, 1, plan.faces_of[1][0]), [8.0, 0.0], atol=1e-6)  # 2 x (here - before)
    assert np.allclose(face_motion(plan, 0, plan.faces_of[0][0]), [8.0, 0.0], atol=1e-6)  # 2 x (after - here)


# ------------------------------------------------------------------- super resolution (the face enhancer)
def save_enhancer(folder: Path, size: int = 64) -> Path:
    """A tiny enhancer saved as `facelab enhancer train` saves one, its last layer random so that it changes
    faces (an untrained one returns them as they are)."""
    torch.manual_seed(0)
    net = FaceEnhancer(channels=8, blocks=1)
    torch.nn.init.normal_(net.tail.weight, std=0.05)
    folder.mkdir(parents=True)
    save_checkpoint(folder / enhancer_dir.WEIGHTS_NAME, {"format": enhancer_dir.FORMAT, "iteration": 0,
                                                         "model": net.state_dict()})
    save_config(EnhancerConfig(size=size, channels=8, blocks=1), folder / CONFIG_NAME)
    return folder


def test_super_resolution_blends_the_enhanced_face_at_its_power(dst_ws, tmp_path):
    plan = plan_merge(dst_ws, dst_ws / "aligned")
    k = next(iter(plan.faces_of))
    items = [(k, i) for i in plan.faces_of[k]]
    predictor = ShiftPredictor()  # 128 px faces, the enhancer's are 64 px: its correction is scaled up
    enhancer = save_enhancer(tmp_path / "enhancer")
    assert super_resolution_for(MergeConfig(enhancer_dir=str(enhancer)), predictor) is None  # power 0: nothing runs
    plain = _face_inputs(plan, items, predictor, "hull")[k]
    blended = {power: _face_inputs(plan, items, predictor, "hull", super_resolution=super_resolution_for(
        MergeConfig(super_resolution=power, enhancer_dir=str(enhancer)), predictor))[k] for power in (50, 100)}
    enhanced = load_enhancer(enhancer, "cpu").enhance([face.face for face in plain])
    for face, full, half, want in zip(plain, blended[100], blended[50], enhanced):
        assert np.abs(full.face - want).max() < 1e-5 and np.abs(full.face - face.face).mean() > 0.005
        assert np.abs(half.face - (face.face + want) / 2).max() < 1e-5
    frame = read_image(plan.frames[k])
    cfg = MergeConfig(color_transfer="none")
    (before, mask), (after, same_mask) = (merge_frame(frame, faces, cfg, predictor.face_type, predictor.resolution)
                                          for faces in (plain, blended[100]))
    changed = np.abs(before.astype(int) - after).max(2) > 0
    assert np.array_equal(mask, same_mask) and changed.sum() > 500 and not (changed & (mask == 0)).any()


def test_super_resolution_without_an_enhancer_is_one_line(dst_ws, tmp_path, monkeypatch, capsys):
    with pytest.raises(FacelabError, match="--super-resolution 50 .*--enhancer-dir.*facelab enhancer train"):
        run_merge(ShiftPredictor(), MergeConfig(workers=1, super_resolution=50), dst_ws, tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FacelabError, match="--enhancer-dir: .*empty is not a face enhancer.*facelab enhancer train"):
        run_merge(ShiftPredictor(), MergeConfig(workers=1, super_resolution=50, enhancer_dir=str(tmp_path / "empty")),
                  dst_ws, tmp_path / "o")
    assert not (tmp_path / "o").exists()  # refused before any frame
    monkeypatch.setattr(merge_commands, "load_model", lambda model_dir, device, precision: ShiftPredictor())
    base = ["merge", "--model-dir", str(tmp_path / "model"), "--input-dir", str(dst_ws), "--output-dir",
            str(tmp_path / "merged"), "--super-resolution", "100", "--preview", "2"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--enhancer-dir" in err
    enhancer = save_enhancer(tmp_path / "enhancer")
    assert main(base + ["--enhancer-dir", str(enhancer), "--preview-output", str(tmp_path / "p.png")]) == 0
    assert read_image(tmp_path / "p.png").shape[1] == 3 * read_image(sorted(dst_ws.glob("*.png"))[0]).shape[1]



def test_swap_refuses_super_resolution_without_an_enhancer_before_any_work(sample_clips, tmp_path):
    from facelab.workflow.swap import swap

    with pytest.raises(FacelabError, match="--enhancer-dir"):
        swap(sample_clips[0], sample_clips[1], tmp_path / "out.mp4", merge_cfg=MergeConfig(super_resolution=50))
    assert not any(tmp_path.iterdir())  # no frames, faces or model were made
