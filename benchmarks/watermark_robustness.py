"""What survives of facelab's invisible mark, what it costs, and whether unmarked real media ever read as marked.

Usage: python benchmarks/watermark_robustness.py [--clips N] [--frames N] [--photos-only]

Marked: the first ``--frames`` frames of ``--clips`` real clips of ../shared/data/videos (every size the
folder has: 256x256 to 1280x720), marked as merge marks its frames. For each clip: detection in the
video re-encoded with H.264 at crf 23 and 28 (32 frames read, as ``facelab verify`` does), and in
single frames after JPEG quality 75, a 0.5x resize, a 10 % crop (5 % off each side, then 3 px more at
top-left so the tile grid moves), and a screenshot-like colour shift (gamma 0.9, gain 1.1, +8). Also the
group photos, marked, through the same single-image changes. Unmarked: every clip (as a video) and every
photo in ../shared/data (groups, CelebA, LFW): how many read as marked, and the highest confidence.
Costs: PSNR of marked vs unmarked frames, and milliseconds per 720p frame to mark and to read.
Prints JSON.
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
import numpy as np  # noqa: E402
import torch  # noqa: E402

from facelab.core.device import device_name  # noqa: E402
from facelab.io.video import iter_frames, probe, write_video  # noqa: E402
from facelab.provenance import watermark  # noqa: E402
from facelab.provenance.verify import VIDEO_FRAMES  # noqa: E402

DATA = REPO.parent / "shared" / "data"
PAYLOAD = 0x86E8A1


def jpeg75(img):
    return cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 75])[1], cv2.IMREAD_COLOR)


def half(img):
    return cv2.resize(img, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)


def crop10(img):
    h, w = img.shape[:2]
    return img[int(0.05 * h) + 3:int(0.95 * h), int(0.05 * w) + 3:int(0.95 * w)]


def colour_shift(img):
    return np.clip(1.1 * 255 * (img / 255.0) ** 0.9 + 8, 0, 255).astype(np.uint8)


CHANGES = {"untouched": lambda x: x, "jpeg_q75": jpeg75, "resize_0.5x": half, "crop_10pct": crop10,
           "colour_shift": colour_shift}


def video_reading(path: Path) -> watermark.MarkReading:
    total = probe(path).frame_count
    wanted = set(np.linspace(0, total - 1, min(VIDEO_FRAMES, total)).round().astype(int).tolist())
    return watermark.read([f for i, f in iter_frames(path) if i in wanted])


def marked_clips(clips: list[Path], frames: int) -> list[dict]:
    rows = []
    for clip in clips:
        info = probe(clip)
        originals = [f for _, (i, f) in zip(range(frames), iter_frames(clip))]
        marked = [watermark.embed(f, PAYLOAD) for f in originals]
        row = {"clip": clip.name, "size": f"{info.width}x{info.height}",
               "psnr_db": round(float(np.mean([cv2.PSNR(a, b) for a, b in zip(originals, marked)])), 2)}
        with tempfile.TemporaryDirectory() as tmp:
            for crf in (23, 28):
                out = Path(tmp) / f"crf{crf}.mp4"
                write_video(out, iter(marked), info.fps, crf=crf)
                r = video_reading(out)
                row[f"h264_crf{crf}"] = {"found": r.found, "confidence": round(r.confidence, 1),
                                         "id_read": r.payload == PAYLOAD}
        for name, change in CHANGES.items():
            readings = [watermark.read([change(m)]) for m in marked[:: max(1, len(marked) // 5)][:5]]
            row[name] = {"found": sum(r.found for r in readings), "of": len(readings),
                         "id_read": sum(r.payload == PAYLOAD for r in readings),
                         "min_confidence": round(min(r.confidence for r in readings), 1)}
        rows.append(row)
    return rows


def marked_photos() -> dict:
    totals = {name: [0, 0, 0] for name in CHANGES}
    for photo in sorted((DATA / "groups").glob("*.[jp][pn]g")):
        marked = watermark.embed(cv2.imread(str(photo)), PAYLOAD)
        for name, change in CHANGES.items():
            r = watermark.read([change(marked)])
            totals[name][0] += r.found
            totals[name][1] += r.payload == PAYLOAD
            totals[name][2] += 1
    return {name: {"found": f, "id_read": i, "of": n} for name, (f, i, n) in totals.items()}


def unmarked(photos_only: bool) -> dict:
    out = {}
    if not photos_only:
        readings = [video_reading(clip) for clip in sorted((DATA / "videos").glob("*.mp4"))]
        out["clips"] = {"count": len(readings), "read_as_marked": sum(r.found for r in readings),
                        "max_confidence": round(max(r.confidence for r in readings), 2)}
    for name, pattern in (("groups", "groups/*.[jp][pn]g"), ("celeba", "celeba/images/*.jpg"),
                          ("lfw", "lfw/images/*/*.jpg")):
        conf = [watermark.read([cv2.imread(str(p))]).confidence for p in sorted(DATA.glob(pattern))]
        out[name] = {"count": len(conf), "read_as_marked": int(np.sum(np.array(conf) >= watermark.MIN_CONFIDENCE)),
                     "max_confidence": round(float(max(conf)), 2)}
    return out


def timing() -> dict:
    frame = next(f for _, f in iter_frames(DATA / "videos" / "lp_s18_720p.mp4"))
    watermark.embed(frame, PAYLOAD)
    start = time.perf_counter()
    for _ in range(20):
        marked = watermark.embed(frame, PAYLOAD)
    embed_ms = (time.perf_counter() - start) / 20 * 1000
    start = time.perf_counter()
    for _ in range(3):
        watermark.read([marked])
    return {"embed_ms_per_720p_frame": round(embed_ms, 2),
            "read_ms_per_720p_frame": round((time.perf_counter() - start) / 3 * 1000, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=8, help="marked clips, spread over the folder's sizes")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--photos-only", action="store_true", help="skip the clips in the false-positive scan")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent: this benchmark measures the shared real data")
    clips = sorted((DATA / "videos").glob("*.mp4"), key=lambda p: probe(p).width * probe(p).height)
    picked = [clips[round(k)] for k in np.linspace(0, len(clips) - 1, args.clips)]
    record = {"benchmark": "watermark_robustness", "device_name": device_name(torch.device("cpu")),
              "amplitude": watermark.AMPLITUDE, "min_confidence": watermark.MIN_CONFIDENCE,
              "timing": timing(), "marked_clips": marked_clips(picked, args.frames),
              "marked_group_photos": marked_photos(), "unmarked": unmarked(args.photos_only)}
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
