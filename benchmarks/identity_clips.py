"""Who dlib's embedding and the calibrated rule say is who, across the real single-person clips.

For each pair of clips: the mean L2 distance over every pair of their sampled faces (the score that
``facelab identity`` compares with the rule's threshold), and the share of the second clip's frames
the rule calls the first clip's person. docs/pfe.md records the output: East Asian men of different
clips sit closer than dlib's LFW-fitted threshold.

Usage: OMP_NUM_THREADS=1 PYTHONPATH=src python3 benchmarks/identity_clips.py [CLIP ...] [--every 8]
(clip names without .mp4, from ../shared/data/videos). Prints one JSON line per pair of clips.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from facelab.qa.identity import faces_of
from facelab.pfe.model import PFEModel

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
CLIPS = ["lp_d0", "lp_d12", "lp_d9", "retalking_face1", "dreamtalk_M030_front_neutral_level1_001",
         "dreamtalk_M030_front_happy_level3_001", "tps_driving", "lp_d18", "lp_d19", "lp_d3"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="*", default=CLIPS)
    parser.add_argument("--every", type=int, default=8, help="every N-th frame of each clip (default: 8)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = PFEModel.deterministic(device="cpu")
    rule = model.rule
    faces = {name: faces_of(model, VIDEOS / f"{name}.mp4", args.every) for name in args.clips}
    for a in args.clips:
        for b in args.clips:
            scores = rule.person_scores(faces[b].mu, faces[b].sigma_sq, faces[a].mu, faces[a].sigma_sq)
            print(json.dumps({"person": a, "clip": b, "frames": len(scores), "l2_mean": round(float(scores.mean()), 3),
                              "same_share": round(float(rule.same(scores).mean()), 3), "rule": rule.describe()}))


if __name__ == "__main__":
    main()
