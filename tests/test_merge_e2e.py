"""End to end on CPU: real clips -> frames -> extract -> a short train -> merge -> video, via `facelab swap`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from facelab.cli import main
from facelab.io.images import list_images, read_image
from facelab.io.video import probe

from conftest import REPO, away_from, marked, signal_when


@pytest.fixture(scope="module")
def swapped(sample_clips, tmp_path_factory):
    """`facelab swap` of the two sample clips: (workspace, result video, dst clip)."""
    src, dst = sample_clips[0], sample_clips[1]
    tmp_path = tmp_path_factory.mktemp("swap_e2e")
    out = tmp_path / "result.mp4"
    ws = tmp_path / "ws"
    tiny = ["--model", "saehd", "--resolution", "64", "--ae-dims", "32", "--e-dims", "8", "--d-dims", "8",
            "--d-mask-dims", "4"]  # the one-shot command reaches every training option
    assert main(["swap", str(src), str(dst), "-o", str(out), "--workspace", str(ws), "--iterations", "20", *tiny,
                 "--identity-every", "25"]) == 0
    return ws, out, dst


def test_swap_end_to_end(swapped):
    ws, out, dst = swapped
    source, result = probe(dst), probe(out)
    assert abs(result.frame_count - source.frame_count) <= 1
    assert abs(result.duration - source.duration) <= 1.0 / float(source.fps) + 1e-6
    assert source.has_audio and result.has_audio
    assert (result.width, result.height) == (source.width, source.height)

    frames = list_images(ws / "data_dst")
    merged = list_images(ws / "data_dst" / "merged")
    assert [p.name for p in merged] == [p.name for p in frames]
    changed_faces = 0
    for frame, done in zip(frames, merged):
        a, b = read_image(frame).astype(int), read_image(done).astype(int)
        mask = cv2.imread(str(ws / "data_dst" / "merged_mask" / frame.name), cv2.IMREAD_GRAYSCALE)
        outside = away_from(mask)
        expected = marked(a.astype(np.uint8)).astype(int) if mask.any() else a  # with the provenance mark
        assert np.array_equal(expected[outside], b[outside]), f"{done.name} changed outside the face mask"
        if (mask > 200).any():
            changed_faces += np.abs(a - b).max(2)[mask > 200].mean() > 2
    assert changed_faces >= len(frames) - 2  # every frame with a face got a new one

    identity = json.loads((ws / "identity.json").read_text())
    # 20 iterations give a blur that may not even be detected as a face: check the report, not the swap
    assert identity["frames"] == (source.frame_count + 24) // 25
    assert identity["faces"] + len(identity["lost_frames"]) == identity["frames"]
    shares = sum(identity[f"{who}_share"] for who in ("src", "dst", "neither", "lost"))
    assert shares == pytest.approx(1) and identity["metric"] == "l2"


@pytest.mark.slow  # about 40 s
def test_a_real_ctrl_c_during_merge_leaves_complete_frames_and_resumes(swapped, tmp_path):
    """SIGINT to the merge's process group, as Ctrl-C sends it: every file on disk is a complete frame, and
    running the command again writes only the missing ones, giving the frames an uninterrupted merge gives."""
    ws, _, _ = swapped
    out = tmp_path / "merged"
    args = ["merge", "--model-dir", str(ws / "model"), "--input-dir", str(ws / "data_dst"), "--output-dir", str(out),
            "--output-mask-dir", str(tmp_path / "mask")]
    cmd, env = [sys.executable, "-m", "facelab", *args], {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = signal_when(args, lambda: out.is_dir() and len(list(out.glob("*.png"))) >= 5, poll=0.02)
    err = proc.err
    frames = list_images(ws / "data_dst")
    done = sorted(out.iterdir())
    assert proc.returncode == 130 and "Traceback" not in err and err.strip() == "facelab: interrupted", err
    assert 5 <= len(done) < len(frames), "the merge finished before the interrupt; nothing was tested"
    assert all(p.suffix == ".png" and read_image(p).shape == read_image(frames[0]).shape for p in done)
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(done)} already done" in rerun.stdout
    reference = tmp_path / "reference"  # the same command, never interrupted
    whole = subprocess.run([*cmd[:cmd.index("--output-dir") + 1], str(reference)], capture_output=True, text=True,
                           env=env, timeout=300)
    assert whole.returncode == 0, whole.stderr
    for frame in frames:
        # the resumed run gives the model the same batches of faces (merger.frame_groups): the same pixels
        assert np.array_equal(read_image(out / frame.name), read_image(reference / frame.name)), frame.name
