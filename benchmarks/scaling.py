"""How cost grows: training step time against resolution and batch, merge and extraction speed against frame
size and face count, as JSON lines.

    python3 benchmarks/scaling.py train                 # SAEHD df-ud at 64/96/128/256 px (batch 8) and batch 4/8/16 (128 px)
    python3 benchmarks/scaling.py stargan               # StarGAN at 64/128 px x batch 4/8/16, seconds per iteration
    python3 benchmarks/scaling.py video --frames 60     # merge and extract at 854x480, 1280x720, 1920x1080; 1, 2, 4 faces

Why these: a user sizing a run asks what doubling the resolution or the batch costs, and whether a 1080p or a
crowded clip merges in real time. Each training figure is facelab's own step (benchmarks/reference_loops.py
builds it: the default SAEHD dims, real CelebA batches made beforehand, fp32, one warm-up step, then the
median of ``--steps`` timed steps). The clips are made from the real 720p clip (../shared/data/videos/
lp_s18_720p.mp4): its first ``--frames`` frames resized to each size (the face grows with the frame), and at
720p as a 2x2 grid of half-size copies of the frame with 1, 2 or 4 cells filled (face size fixed, count growing). Merge uses
the default settings (`facelab merge` defaults: hull mask, rct, PNG, provenance on, fp32) with the 128 px
SAEHD liae-ud model of benchmarks/merge_speed.py (untrained: speed does not depend on the weights);
extraction the default detector and settings. The clips and their extracted faces are cached in the temp
folder; every timed run writes into a fresh folder.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from alternate import emit, machine  # noqa: E402
from clips import find_720p_clip  # noqa: E402

SIZES = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080)}


def timed_steps(step, units, warmup: int = 1) -> list[float]:
    for unit in units[:warmup]:
        step(unit)
    times = []
    for unit in units[warmup:]:
        start = time.perf_counter()
        step(unit)
        times.append(time.perf_counter() - start)
    return times


def train_scaling(args) -> None:
    from reference_loops import stargan_case, swap_case

    if args.what == "train":
        grid = [(r, 8) for r in (64, 96, 128, 256)] + [(128, b) for b in (4, 16)]
        for res, batch in grid:
            case = swap_case("saehd-df-ud-128", "fp32", batch, args.steps + 1, options={"resolution": res})
            try:
                times = timed_steps(case.facelab, case.units)
            finally:
                for done in case.cleanup:
                    done()
            emit({"benchmark": "scaling", "what": "swap step", "model": "saehd df-ud", "resolution": res,
                  "batch_size": batch, "seconds_per_step": round(statistics.median(times), 3),
                  "seconds": [round(t, 3) for t in times], **machine(torch.device("cpu"))})
    else:
        for size in (64, 128):
            for batch in (4, 8, 16):
                case = stargan_case("fp32", batch, size, 2)
                times = timed_steps(case.facelab, case.units)  # one cycle = d_train_repeat iterations
                emit({"benchmark": "scaling", "what": "stargan iteration", "image_size": size, "batch_size": batch,
                      "seconds_per_iteration": round(times[0] / case.settings["d_train_repeat"], 3),
                      "cycle_seconds": round(times[0], 3), **machine(torch.device("cpu"))})


def make_clip(source: Path, frames: int, size: tuple[int, int], tiles: int, out: Path) -> Path:
    """The first ``frames`` frames of ``source`` resized to ``size``; with ``tiles`` (1, 2 or 4) each frame
    is instead a 2x2 grid of half-size copies of itself with ``tiles`` cells filled and the rest black, so
    the face count grows while the face size stays fixed (an earlier version pasted the face region beside
    itself, which on a close-up overlapped the face and was found as one face)."""
    from facelab.io.video import iter_frames

    if out.is_file():
        return out
    writer = None
    tmp = out.with_suffix(".tmp.mp4")
    width, height = size
    for index, frame in iter_frames(source):
        if index >= frames:
            break
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA if size[1] < frame.shape[0] else cv2.INTER_CUBIC)
        if tiles:
            half = cv2.resize(frame, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
            frame = np.zeros_like(frame)
            for k in range(tiles):
                y, x = (k // 2) * (height // 2), (k % 2) * (width // 2)
                frame[y:y + height // 2, x:x + width // 2] = half
        if writer is None:
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), 30, size)
        writer.write(frame)
    writer.release()
    tmp.rename(out)
    return out


def video_scaling(args) -> None:
    from merge_speed import prepare

    from facelab.extract.config import ExtractConfig
    from facelab.extract.pipeline import extract
    from facelab.merge.config import MergeConfig
    from facelab.merge.merger import run_merge
    from facelab.swap.config import SwapConfig, apply_preset
    from facelab.swap.models import build_model
    from facelab.swap.predictor import SwapPredictor

    source = args.clip or find_720p_clip("hopper")
    cache = Path(tempfile.gettempdir()) / "facelab-bench-scaling"
    cache.mkdir(exist_ok=True)
    cfg = apply_preset(SwapConfig(model="saehd", resolution=128, face_type="whole"))
    device = torch.device("cpu")
    predictor = SwapPredictor(build_model(cfg).to(device), cfg, device)
    runs = [(name, size, 0) for name, size in SIZES.items()] + [("720p", SIZES["720p"], k) for k in (1, 2, 4)]
    for name, size, tiles in runs:
        clip = make_clip(source, args.frames, size, tiles, cache / f"{name}-{tiles}tiles-{args.frames}.mp4")
        record = {"benchmark": "scaling", "what": "video", "frame_size": f"{size[0]}x{size[1]}",
                  "faces_per_frame": max(tiles, 1), "layout": f"{tiles} of 2x2 half-size tiles" if tiles else "whole frame",
                  "clip": str(clip), "source": str(source)}
        fps = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as out:
                start = time.perf_counter()
                stats = extract(clip, out, ExtractConfig())
                fps.append(stats.frames / (time.perf_counter() - start))
        record.update(extract_frames_per_s=round(statistics.median(fps), 2), extract_faces=stats.faces,
                      extract_frames=stats.frames)
        frames = prepare(clip, args.frames, cfg.face_type)
        fps = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as out:
                stats = run_merge(predictor, MergeConfig(), frames, Path(out) / "merged", Path(out) / "mask")
                fps.append(stats.fps)
        record.update(merge_frames_per_s=round(statistics.median(fps), 2), merge_faces=stats.faces,
                      merge_runs=[round(f, 2) for f in fps])
        emit({**record, **machine(device)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("train", "stargan", "video"))
    ap.add_argument("--steps", type=int, default=2, help="timed training steps per setting")
    ap.add_argument("--frames", type=int, default=60, help="frames per clip (video)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per clip (video); the median is reported")
    ap.add_argument("--clip", type=Path, default=None, help="source clip (default: the shared 720p clip)")
    args = ap.parse_args()
    if args.what == "video":
        video_scaling(args)
    else:
        train_scaling(args)


if __name__ == "__main__":
    main()
