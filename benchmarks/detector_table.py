"""How well each face detector does on the real footage and photos of ../shared/data, as JSON.

Usage:
  python benchmarks/detector_table.py clips [--detectors hog mtcnn] [--clips lp_d12.mp4 ...]
  python benchmarks/detector_table.py groups [--detectors hog mtcnn dlib-cnn]
  python benchmarks/detector_table.py calibrate

``clips``: `facelab extract` with default options (only the detector changed) on every clip of
videos/videos.tsv: frames with exactly one face, with none, with two or more (and which), how many faces
the tracker kept where the detector missed them, seconds and frames/s. ``groups``: extraction on each group photo (at the default and a smaller --min-face-size); for the nine dlib_* PASCAL photos precision and
recall against the hand-made boxes of dlib_training.xml / dlib_testing.xml (a found face matches a box
at IoU >= 0.3, each box at most once), for the others the faces found against groups/faces.tsv.
``calibrate``: the offsets from MTCNN's square box to dlib's HOG box (facelab.detect.mtcnn.TO_HOG_BOX),
fitted on frames sampled at 2 frames/s from every clip where both detectors find exactly one face.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from facelab.core.device import device_name  # noqa: E402
from facelab.extract.config import ExtractConfig  # noqa: E402
from facelab.extract.pipeline import extract  # noqa: E402
from facelab.face.metadata import read_meta  # noqa: E402
from facelab.io.images import list_images  # noqa: E402
from facelab.metrics.imglab import read_boxes  # noqa: E402
from facelab.metrics.iou import matched_boxes  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def _ranges(keys: list[int]) -> str:
    """1,2,3,7 -> '1-3,7' (frame numbers from 1, as the face files are named)."""
    out, run = [], []
    for k in sorted(keys):
        if run and k != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(k)
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def clip_row(clip: Path, detector: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        stats = extract(clip, out, ExtractConfig(detector=detector))
        seconds = time.perf_counter() - start
        faces = list_images(Path(out))
        per_frame = Counter(int(p.stem.split("_")[0]) for p in faces)
        tracked = sum(read_meta(p).detector.endswith("+track") for p in faces)
    none = [int(k) for k in stats.no_face]
    several = [k for k, n in per_frame.items() if n > 1]
    one = stats.frames - len(none) - len(several)
    return {"clip": clip.name, "detector": detector, "frames": stats.frames, "one_face": one,
            "one_face_share": round(one / max(stats.frames, 1), 4), "no_face": len(none), "no_face_frames": _ranges(none),
            "two_or_more": len(several), "two_or_more_frames": _ranges(several), "faces_kept_by_tracking": tracked,
            "seconds": round(seconds, 2), "frames_per_s": round(stats.frames / seconds, 2)}


def pascal_boxes() -> dict:
    """dlib_<file> -> the hand-made boxes of dlib's training and testing XML."""
    return {"dlib_" + name: boxes for xml in ("dlib_training.xml", "dlib_testing.xml")
            for name, boxes in read_boxes(DATA / "groups" / xml).items()}


def group_rows(detector: str, min_face_size: int) -> dict:
    counted = {row.split("\t")[0]: int(row.split("\t")[1])
               for row in (DATA / "groups" / "faces.tsv").read_text().splitlines()[1:]}
    boxes = pascal_boxes()
    rows, tp, n_found, n_truth, start = [], 0, 0, 0, time.perf_counter()
    for name, expected in sorted(counted.items()):
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            extract(DATA / "groups" / name, out, ExtractConfig(detector=detector, min_face_size=min_face_size))
            seconds = time.perf_counter() - t0
            found = [read_meta(p).source_rect for p in list_images(Path(out))]
        row = {"photo": name, "faces_counted": expected, "faces_found": len(found), "seconds": round(seconds, 2)}
        if name in boxes:
            hits = matched_boxes(found, boxes[name])
            row.update(true_positives=hits, boxes=len(boxes[name]))
            tp, n_found, n_truth = tp + hits, n_found + len(found), n_truth + len(boxes[name])
        rows.append(row)
    return {"detector": detector, "min_face_size": min_face_size, "pascal_precision": round(tp / max(n_found, 1), 4),
            "pascal_recall": round(tp / max(n_truth, 1), 4),
            "others_exact_count": sum(r["faces_found"] == r["faces_counted"] for r in rows if r["photo"] not in boxes),
            "others": sum(r["photo"] not in boxes for r in rows),
            "seconds": round(time.perf_counter() - start, 1), "photos": rows}


def calibrate() -> dict:
    from facelab.detect.dlib_models import HogDetector
    from facelab.detect.mtcnn import MtcnnDetector
    from facelab.io.video import iter_frames

    mtcnn, hog, offsets = MtcnnDetector(device="cpu"), HogDetector(), []
    for clip in sorted((DATA / "videos").glob("*.mp4")):
        for _, image in iter_frames(clip, 2.0):
            f = min(1.0, 640 / max(image.shape[:2]))
            small = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA) if f < 1 else image
            square, box = mtcnn.detect_raw(small), hog.detect(small)
            if len(square) == 1 and len(box) == 1:
                side = square[0, 2] - square[0, 0]
                offsets.append((np.array(box[0].box) - square[0, :4]) / side)
    o = np.array(offsets)
    return {"frames": len(o), "to_hog_box_median": np.median(o, 0).round(3).tolist(), "std": o.std(0).round(3).tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("clips", "groups", "calibrate"))
    ap.add_argument("--detectors", nargs="+", default=["hog", "mtcnn"])
    ap.add_argument("--clips", nargs="+", default=None, help="clip file names (default: every clip)")
    ap.add_argument("--min-face-size", type=int, nargs="+", default=[40, 20],
                    help="groups: extraction's --min-face-size values to measure (40 is the default; the PASCAL "
                         "boxes are 37-109 px)")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent: this benchmark measures the shared real data")
    record = {"benchmark": f"detector_table {args.what}", "device_name": device_name(torch.device("cpu"))}
    if args.what == "calibrate":
        record.update(calibrate())
    elif args.what == "groups":
        record["detectors"] = [group_rows(d, m) for d in args.detectors for m in args.min_face_size]
    else:
        names = args.clips or [r.split("\t")[0] for r in (DATA / "videos" / "videos.tsv").read_text().splitlines()[1:]]
        rows = [clip_row(DATA / "videos" / n, d) for n in names for d in args.detectors]
        record["clips"] = rows
        record["summary"] = {d: {"clips_at_95": sum(r["one_face_share"] >= 0.95 for r in rows if r["detector"] == d),
                                 "clips": sum(r["detector"] == d for r in rows),
                                 "frames_per_s": round(sum(r["frames"] for r in rows if r["detector"] == d)
                                                       / sum(r["seconds"] for r in rows if r["detector"] == d), 2)}
                             for d in args.detectors}
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
