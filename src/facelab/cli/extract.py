"""``facelab extract``: faces from a video, a folder of frames or photos, into an aligned faceset."""

from __future__ import annotations

import argparse
from pathlib import Path

from facelab.core.config import add_config_arguments, config_from_args
from facelab.extract.config import ExtractConfig
from facelab.extract.pipeline import STATE_NAME, extract


def _cmd_extract(args: argparse.Namespace) -> int:
    cfg = config_from_args(ExtractConfig, args)
    stats = extract(Path(args.input), Path(args.output), cfg)
    print(f"{args.output}: {stats.summary()}")
    if stats.no_face:
        shown = ", ".join(stats.no_face[:10]) + (" ..." if len(stats.no_face) > 10 else "")
        print(f"no face found in: {shown} (all listed in {Path(args.output) / STATE_NAME})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("extract", help="detect, align and save the faces of a video or image folder",
                       description="Detect faces, find 68 landmarks, align each face to the chosen face type "
                                   "and write it with its metadata embedded. Resumes where it stopped.")
    p.add_argument("input", help="a video, a folder of frames (from `facelab frames`) or photos, or one image")
    p.add_argument("-o", "--output", required=True, help="output folder for the aligned faces (e.g. WS/data_src/aligned)")
    p.add_argument("--config", help="YAML file with extract options (flags override it)")
    add_config_arguments(p, ExtractConfig)
    p.set_defaults(func=_cmd_extract)
