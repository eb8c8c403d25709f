"""Milliseconds to mark and to sign one 720p frame (the first frame of lp_s18_720p.mp4), as JSON.

Usage: python benchmarks/provenance_cost.py [--frames N]
Marks the frame N times (the mark's pattern for the frame size is made once, as in a video) and signs N
PNG copies of it with this installation's key.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import cv2  # noqa: E402
import torch  # noqa: E402

from facelab.core.device import device_name  # noqa: E402
from facelab.io.video import iter_frames  # noqa: E402
from facelab.provenance.signing import Credentials  # noqa: E402
from facelab.provenance.stamp import Stamp  # noqa: E402

CLIP = REPO.parent / "shared" / "data" / "videos" / "lp_s18_720p.mp4"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=20)
    args = ap.parse_args()
    frame = next(f for _, f in iter_frames(CLIP))
    stamp = Stamp(Credentials("face swap"))
    stamp.mark(frame)  # the pattern for this frame size, made once per video
    start = time.perf_counter()
    for _ in range(args.frames):
        stamp.mark(frame)
    mark_ms = (time.perf_counter() - start) / args.frames * 1000
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"{k}.png" for k in range(args.frames + 1)]
        for p in paths:
            cv2.imwrite(str(p), frame)
        stamp.sign(paths[0])  # the signer is made once per process
        start = time.perf_counter()
        for p in paths[1:]:
            stamp.sign(p)
        sign_ms = (time.perf_counter() - start) / args.frames * 1000
    print(json.dumps({"benchmark": "provenance_cost", "device_name": device_name(torch.device("cpu")), "frame": "1280x720",
                      "mark_ms": round(mark_ms, 1), "sign_png_ms": round(sign_ms, 1)}))


if __name__ == "__main__":
    main()
