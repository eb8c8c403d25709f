"""``facelab frames``: DeepFaceLab's "extract images from video"."""

from __future__ import annotations

import argparse
from pathlib import Path

from facelab.core.config import check_range
from facelab.core.files import ensure_folder, remove_stale_temps
from facelab.core.progress import progress
from facelab.io.images import write_image
from facelab.io.video import iter_frames, probe


def frame_name(index: int, fmt: str) -> str:
    """Frame files are numbered from 1 like DeepFaceLab's (00001.png is source frame 0)."""
    return f"{index + 1:05d}.{fmt}"


def extract_frames(video: Path, out_dir: Path, fps: float | None = None, fmt: str = "png",
                   jpeg_quality: int = 95) -> int:
    if fps is not None:
        check_range(fps, "fps", "frames", above=0)
    check_range(jpeg_quality, "jpeg_quality", "frames", low=1, high=100)
    info = probe(video)
    ensure_folder(out_dir, "output folder")
    remove_stale_temps(out_dir)
    total = info.frame_count if not fps else int(info.duration * min(fps, float(info.fps))) or None
    count = 0
    with progress(total=total, desc="frames", unit="frame") as bar:
        for index, frame in iter_frames(video, fps):
            write_image(out_dir / frame_name(index, fmt), frame, jpeg_quality)
            count += 1
            bar.update()
    return count


def _cmd_frames(args: argparse.Namespace) -> int:
    n = extract_frames(Path(args.video), Path(args.output), args.fps, args.format, args.jpeg_quality)
    print(f"wrote {n} frames to {args.output}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("frames", help="extract the frames of a video as images",
                       description="Extract the frames of a video as numbered images (00001.png, ...).")
    p.add_argument("video", help="input video file")
    p.add_argument("-o", "--output", required=True, help="output folder for the frames")
    p.add_argument("--fps", type=float, default=None, help="keep this many frames per second (default: all frames)")
    p.add_argument("--format", choices=("png", "jpg"), default="png", help="image format (default: png)")
    p.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality 1-100 (default: 95)")
    p.set_defaults(func=_cmd_frames)
