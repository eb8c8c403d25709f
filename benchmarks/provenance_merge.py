"""Does the mark that merge puts on the swapped faces survive? Measured on real merges of real clips.

Usage: python benchmarks/provenance_merge.py [--clips NAME ...] [--frames N]

For each clip of ../shared/data/videos: its first ``--frames`` frames are extracted (default options),
merged with provenance on by a pass-through model (it hands back each dst face as it is, so the merge
changes the picture only by resampling the face and by the mark, which covers every frame with a face),
and assembled into a video as ``facelab video`` does (crf 18). Then ``facelab verify``'s
reading of: that video; the video re-encoded with H.264 at crf 23 and 28; single merged frames after
JPEG quality 75, a 0.5x resize, a 10 % crop and a screenshot-like colour shift (the same changes as
benchmarks/watermark_robustness.py). Also the share of the frame the face covers, the mark's PSNR (the
merge with provenance against the same merge without it) and whether the manifests verify. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from facelab.extract.config import ExtractConfig  # noqa: E402
from facelab.extract.pipeline import extract  # noqa: E402
from facelab.io.frames import frame_name  # noqa: E402
from facelab.io.images import list_images, read_image, write_image  # noqa: E402
from facelab.io.video import iter_frames, probe, write_video  # noqa: E402
from facelab.merge.config import MergeConfig  # noqa: E402
from facelab.merge.merger import run_merge  # noqa: E402
from facelab.merge.video import assemble_video  # noqa: E402
from facelab.provenance import watermark  # noqa: E402
from facelab.provenance.signing import Credentials  # noqa: E402
from facelab.provenance.stamp import Stamp  # noqa: E402
from facelab.provenance.verify import verify  # noqa: E402
from watermark_robustness import CHANGES  # noqa: E402  (the same changes, one definition)

DATA = REPO.parent / "shared" / "data" / "videos"
CLIPS = ["dreamtalk_W011_front_neutral_level1_001.mp4", "lp_d19.mp4", "lp_d0.mp4", "retalking_face4.mp4",
         "lp_s18_720p.mp4"]


class PassThrough:
    """A "model" that returns every dst face unchanged, with a full mask: the merge changes nothing but
    the mark."""

    def __init__(self, resolution: int = 128, face_type: str = "full"):
        self.resolution, self.face_type = resolution, face_type

    def predict(self, faces, src_mask=True, dst_mask=True):
        n, r = len(faces), self.resolution
        ones = np.ones((n, r, r), np.float32)
        return faces.astype(np.float32) / 255.0, ones if src_mask else None, ones if dst_mask else None


def reencode(video: Path, out: Path, crf: int) -> Path:
    write_video(out, (f for _, f in iter_frames(video)), probe(video).fps, crf)
    return out


def measure(clip: Path, frames: int, work: Path) -> dict:
    src = work / "frames"
    src.mkdir()
    for index, frame in iter_frames(clip):
        if index >= frames:
            break
        write_image(src / frame_name(index, "png"), frame)
    extract(src, src / "aligned", ExtractConfig(workers=1))
    stats = run_merge(PassThrough(), MergeConfig(workers=1, color_transfer="none"), src, work / "merged",
                      work / "mask", credentials=Credentials("face swap"))
    run_merge(PassThrough(), MergeConfig(workers=1, color_transfer="none", provenance=False), src, work / "plain")
    merged = list_images(work / "merged")
    masks = [cv2.imread(str(work / "mask" / p.name), 0) for p in merged]
    originals = [read_image(work / "plain" / p.name) for p in merged]  # the same merge without the mark
    outs = [read_image(p) for p in merged]
    faces = [m > 0 for m in masks]
    psnr = [cv2.PSNR(o, m) for o, m in zip(originals, outs)]
    video = work / "result.mp4"
    assemble_video(work / "merged", video, fps=probe(clip).fps, stamp=Stamp(Credentials("face swap")))
    report = verify(video)
    row = {"clip": clip.name, "size": f"{outs[0].shape[1]}x{outs[0].shape[0]}", "frames": len(merged),
           "faces": stats.faces, "face_pct_of_frame": round(100 * float(np.mean([f.mean() for f in faces])), 1),
           "mark_psnr_db": round(float(np.mean(psnr)), 2) if psnr else None,
           "frame_manifest_valid": all(verify(p).valid for p in merged[:3]),
           "video": {"manifest_valid": report.valid, "found": report.watermark, "confidence": report.watermark_confidence}}
    for crf in (23, 28):
        r = verify(reencode(video, work / f"crf{crf}.mp4", crf))
        row[f"h264_crf{crf}"] = {"found": r.watermark, "confidence": r.watermark_confidence}
    picks = [outs[i] for i in np.linspace(0, len(outs) - 1, 5).round().astype(int)]
    for name, change in CHANGES.items():
        if name == "untouched":
            continue
        readings = [watermark.read([change(p)]) for p in picks]
        row[name] = {"found": sum(r.found for r in readings), "of": len(readings),
                     "min_confidence": round(min(r.confidence for r in readings), 1)}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", nargs="+", default=CLIPS)
    ap.add_argument("--frames", type=int, default=32)
    args = ap.parse_args()
    rows = []
    for name in args.clips:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(measure(DATA / name, args.frames, Path(tmp)))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps({"benchmark": "provenance_merge", "min_confidence": watermark.MIN_CONFIDENCE, "clips": rows},
                     indent=2))


if __name__ == "__main__":
    main()
