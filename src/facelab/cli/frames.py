"""``facelab frames``: DeepFaceLab's "extract images from video"."""

from __future__ import annotations

import argparse
from pathlib import Path

from facelab.io.frames import extract_frames


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
