"""Frames per second of `facelab extract` on a 720p clip with the default detector (HOG), as JSON.

Usage: python benchmarks/extract_speed.py [--clip PATH] [--workers N ...]
Uses the first 720p clip in ../shared/data/videos, else renders the 720p sample clip
(facelab.samples.clips). Each run extracts into a fresh temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from clips import find_720p_clip  # noqa: E402
from facelab.core.device import device_name  # noqa: E402
from facelab.extract.config import ExtractConfig  # noqa: E402
from facelab.extract.pipeline import extract  # noqa: E402
from facelab.io.video import probe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clip", type=Path, default=None)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="0 = one per core (the default)")
    args = ap.parse_args()
    clip = args.clip or find_720p_clip("astronaut")
    info = probe(clip)
    results = []
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            stats = extract(clip, out, ExtractConfig(workers=workers))
            seconds = time.perf_counter() - start
        results.append({"workers": workers or os.cpu_count(), "frames": stats.frames, "faces": stats.faces,
                         "seconds": round(seconds, 3), "frames_per_s": round(stats.frames / seconds, 2)})
    print(json.dumps({"benchmark": "extract_speed", "clip": str(clip), "resolution": f"{info.width}x{info.height}",
                      "detector": "hog", "device_name": device_name(torch.device("cpu")),
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
