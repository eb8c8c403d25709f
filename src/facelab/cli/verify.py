"""``facelab verify FILE...``: content credentials and watermark of images and videos."""

from __future__ import annotations

import argparse
import json

from facelab.core.files import atomic_write_text


def _cmd_verify(args: argparse.Namespace) -> int:
    from facelab.provenance.verify import verify

    reports = [verify(path) for path in args.files]
    for report in reports:
        print(report.line())
    if args.json:
        atomic_write_text(args.json, json.dumps([r.as_dict() for r in reports], indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check the content credentials and the invisible mark of images and videos",
                       description="For each image or video: is a facelab C2PA manifest present, valid and "
                                   "trusted, was the file changed after signing, and do its pixels carry "
                                   "facelab's invisible mark (with its confidence and id).")
    p.add_argument("files", nargs="+", help="images (jpg, png) or videos (mp4, ...)")
    p.add_argument("--json", help="also write the reports to this JSON file")
    p.set_defaults(func=_cmd_verify)
