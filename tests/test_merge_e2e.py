"""End to end on CPU: real clips -> frames -> extract -> a short train -> merge -> video, via `facelab swap`."""

from __future__ import annotations

import json

import cv2
import numpy as np

from facelab.cli import main
from facelab.io.images import list_images, read_image
from facelab.io.video import probe


def test_swap_end_to_end(sample_clips, tmp_path):
    src, dst = sample_clips[0], sample_clips[1]
    out = tmp_path / "result.mp4"
    ws = tmp_path / "ws"
    assert main(["swap", str(src), str(dst), "-o", str(out), "--workspace", str(ws), "--iterations", "20",
                 "--identity-every", "10"]) == 0

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
        outside = cv2.dilate(mask, np.ones((3, 3), np.uint8)) == 0
        assert np.array_equal(a[outside], b[outside]), f"{done.name} changed outside the face mask"
        if (mask > 200).any():
            changed_faces += np.abs(a - b).max(2)[mask > 200].mean() > 2
    assert changed_faces >= len(frames) - 2  # every frame with a face got a new one

    identity = json.loads((ws / "identity.json").read_text())
    # 20 iterations give a blur that may not even be detected as a face: check the report, not the swap
    assert identity["frames"] == (source.frame_count + 9) // 10
    assert identity["faces"] + len(identity["no_face_frames"]) == identity["frames"]
