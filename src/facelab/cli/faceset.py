"""``facelab faceset info|sort|dedupe|keep|resize|enhance|pack|unpack``."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from facelab.align.face_types import FACE_TYPES, face_type_name
from facelab.faceset import ops
from facelab.face.metadata import FaceMeta, read_meta, require_meta
from facelab.faceset.store import Faceset, pack, unpack
from facelab.face.masks.applied import KEY as APPLIED_KEY, decode_mask, has_applied_mask
from facelab.face.masks.labels import EXCLUDE_KEY, INCLUDE_KEY


def _meta_dict(meta: FaceMeta) -> dict:
    d = json.loads(meta.to_json())
    d["landmarks"] = f"{len(meta.landmarks)} points"
    d["source_landmarks"] = f"{len(meta.source_landmarks)} points"
    d["image_to_face"] = np.round(np.asarray(meta.image_to_face), 4).tolist()
    for key in (INCLUDE_KEY, EXCLUDE_KEY):
        if key in d["extra"]:
            d["extra"][key] = f"{len(d['extra'][key])} polygons"
    if has_applied_mask(meta):
        d["extra"][APPLIED_KEY] = "applied XSeg mask ({0}x{0})".format(len(decode_mask(meta.extra[APPLIED_KEY])))
    return d


def _cmd_info(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.is_file():
        info = _meta_dict(require_meta(read_meta(path), path)) if not args.full else json.loads(
            require_meta(read_meta(path), path).to_json())
    else:
        info = ops.describe(Faceset.open(path))
    print(json.dumps(info, indent=2))
    return 0


def _cmd_sort(args: argparse.Namespace) -> int:
    n, aside = ops.sort_faceset(args.folder, args.by, args.best_count)
    print(f"sorted {n} faces by {args.by}" + (f"; faces left out moved to {aside}" if aside else ""))
    return 0


def _cmd_dedupe(args: argparse.Namespace) -> int:
    n, aside = ops.dedupe_faceset(args.folder, args.max_distance)
    print(f"{n} near-duplicate faces" + (f" moved to {aside}" if aside else ""))
    return 0


def _cmd_keep(args: argparse.Namespace) -> int:
    from facelab.extract.pipeline import faceset_of

    with tempfile.TemporaryDirectory() as tmp:  # photos or a video of the person are extracted first
        like = faceset_of(args.like, Path(tmp) / "aligned")
        kept, moved, aside = ops.keep_person(args.folder, like, args.threshold)
    print(f"kept {kept} faces of the person in {args.like}" + (f"; {moved} other faces moved to {aside}" if aside else ""))
    return 0


def _cmd_resize(args: argparse.Namespace) -> int:
    from facelab.faceset.resize import resize_faceset

    out = Path(args.output) if args.output else Path(args.folder).with_name(Path(args.folder).name + "_resized")
    n = resize_faceset(args.folder, out, args.size, args.face_type, args.jpeg_quality)
    print(f"resized {n} faces into {out}")
    return 0


def _cmd_enhance(args: argparse.Namespace) -> int:
    from facelab.enhance.apply import enhance_faceset

    stats = enhance_faceset(args.folder, args.enhancer_dir, args.output, args.in_place, args.device, args.batch_size,
                            args.jpeg_quality)
    before = f"; {stats.skipped} faces were enhanced before and kept as they were" if stats.skipped else ""
    print(f"enhanced {stats.enhanced} faces into {stats.folder}{before}")
    return 0


def _cmd_pack(args: argparse.Namespace) -> int:
    print(f"packed into {pack(args.folder)}")
    return 0


def _cmd_unpack(args: argparse.Namespace) -> int:
    n, aside = unpack(args.folder)
    print(f"unpacked {n} faces into {args.folder}" + (
        f"; loose faces that differed from the pack's copy were kept, the pack's copies are in {aside}" if aside else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("faceset", help="inspect, sort, dedupe, keep one person, resize, enhance, pack and unpack aligned facesets")
    fs = p.add_subparsers(dest="faceset_command", required=True, metavar="ACTION")

    info = fs.add_parser("info", help="summary of a faceset folder, or the metadata of one face image")
    info.add_argument("path", help="faceset folder or aligned face image")
    info.add_argument("--full", action="store_true", help="with a face image: print every landmark too")
    info.set_defaults(func=_cmd_info)

    srt = fs.add_parser("sort", help="rename faces into an order (DeepFaceLab's sort)")
    srt.add_argument("folder")
    srt.add_argument("--by", required=True, type=ops.sort_key, choices=ops.SORT_KEYS, metavar="KEY",
                     help="; ".join(f"{key}: {text}" for key, (_, text) in ops.SORTS.items()) + "; best: a "
                          "pose-spread subset of --best-count of the sharpest faces (the rest moved to FOLDER_trash). "
                          "DeepFaceLab's names are accepted: " + ", ".join(f"{old} = {new}" for old, new in
                                                                         ops.SORT_ALIASES.items()))
    srt.add_argument("--best-count", type=int, default=None, help="with --by best: how many faces to keep")
    srt.set_defaults(func=_cmd_sort)

    dd = fs.add_parser("dedupe", help="move near-identical faces to FOLDER_duplicates, keeping the sharpest")
    dd.add_argument("folder")
    dd.add_argument("--max-distance", type=int, default=4, help="max differing bits of the 64-bit image hash (default 4)")
    dd.set_defaults(func=_cmd_dedupe)

    kp = fs.add_parser("keep", help="keep one person's faces, moving everybody else's to FOLDER_others",
                       description="For footage with several people: keep the faces that show the person of "
                                   "--like (a few photos or a video of them, or an aligned faceset), judged by "
                                   "the calibrated same-person rule (docs/pfe.md); the other faces are moved to FOLDER_others, "
                                   "not deleted.")
    kp.add_argument("folder")
    kp.add_argument("--like", required=True,
                    help="photos (a folder or one image), a video or an aligned faceset showing the person to keep")
    kp.add_argument("--threshold", type=float, default=None,
                    help="replace the same-person rule's threshold: the mean L2 distance to the person's faces a face "
                         "must stay below (default: dlib's threshold fitted on LFW, docs/pfe.md)")
    kp.set_defaults(func=_cmd_keep)

    rs = fs.add_parser("resize", help="a copy of the faceset at another size or a tighter face type",
                       description="DeepFaceLab's faceset resize: re-align every face for --size and --face-type "
                                   "from its saved landmarks, without the source frames; XSeg labels and applied "
                                   "masks follow. Only a face type that fits inside the saved one (e.g. whole -> "
                                   "full) is possible; a larger one needs a new extraction. The input is not changed.")
    rs.add_argument("folder")
    rs.add_argument("-o", "--output", default=None, help="new faceset folder (default: FOLDER_resized)")
    rs.add_argument("--size", type=int, required=True, help="new face size in pixels")
    rs.add_argument("--face-type", type=face_type_name, choices=FACE_TYPES, default=None,
                    help="new face type (default: keep each face's; DeepFaceLab's h, mf, f, wf are accepted)")
    rs.add_argument("--jpeg-quality", type=int, default=95, help="quality of JPEG faces (default 95)")
    rs.set_defaults(func=_cmd_resize)

    en = fs.add_parser("enhance", help="sharpen every face with a trained face enhancer (into FOLDER_enhanced)",
                       description="DeepFaceLab's faceset enhance: restore every face with the enhancer of "
                                   "--enhancer-dir (made by `facelab enhancer train`); each face keeps its metadata "
                                   "(alignment, landmarks, XSeg labels and masks) and records which enhancer it went "
                                   "through, so no face is enhanced twice. The input is not changed unless --in-place.")
    en.add_argument("folder")
    en.add_argument("--enhancer-dir", required=True, help="an enhancer folder made by facelab enhancer train")
    en.add_argument("-o", "--output", default=None, help="new faceset folder (default: FOLDER_enhanced)")
    en.add_argument("--in-place", action="store_true",
                    help="replace the faces themselves instead (rerun after an interruption to finish)")
    en.add_argument("--jpeg-quality", type=int, default=95, help="quality of JPEG faces (default 95)")
    en.add_argument("--batch-size", type=int, default=16, help="faces per enhancer call (default: 16)")
    en.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    en.set_defaults(func=_cmd_enhance)

    pk = fs.add_parser("pack", help="pack the faces into one faceset.pak for fast loading")
    pk.add_argument("folder")
    pk.set_defaults(func=_cmd_pack)

    up = fs.add_parser("unpack", help="turn faceset.pak back into image files")
    up.add_argument("folder")
    up.set_defaults(func=_cmd_unpack)
