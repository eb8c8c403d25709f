"""``facelab merge`` and ``facelab video``: the last steps of DeepFaceLab's workflow."""

from __future__ import annotations

import argparse
from pathlib import Path

from facelab.core.config import add_config_arguments, add_flag, config_from_args
from facelab.core.errors import FacelabError
from facelab.io.images import write_image
from facelab.merge.config import MergeConfig
from facelab.merge.merger import FrameMerger, Predictor, check_output_dirs, preview, run_merge
from facelab.merge.video import assemble_video
from facelab.provenance.signing import Credentials
from facelab.provenance.stamp import EMBEDDED_NOTE, Stamp, warn_if_off
from facelab.swap.model_dir import credentials


def load_model(model_dir: str | Path, device: str, precision: str = "fp32") -> Predictor:
    """The trained swap model of ``model_dir`` (imported here so `facelab video` needs no torch)."""
    try:
        from facelab.swap.predictor import load_predictor
    except ImportError as exc:
        raise FacelabError(f"the swap model code is not available ({exc}); reinstall facelab") from None
    return load_predictor(Path(model_dir), device=device, precision=precision)


def _cmd_merge(args: argparse.Namespace) -> int:
    cfg = config_from_args(MergeConfig, args)
    cfg.check()  # before the model loads
    mask_dir = Path(args.output_mask_dir) if args.output_mask_dir else None
    check_output_dirs(Path(args.input_dir), Path(args.output_dir), mask_dir)  # before loading the model
    predictor = load_model(args.model_dir, cfg.device, cfg.precision)
    aligned = Path(args.aligned_dir) if args.aligned_dir else None
    if args.preview is not None:
        out = Path(args.preview_output) if args.preview_output else \
            Path(args.output_dir).parent / f"merge_preview_{args.preview}.png"
        write_image(out, preview(predictor, cfg, Path(args.input_dir), args.preview, aligned, Path(args.output_dir)))
        print(f"wrote {out} (original | merged | mask)")
        return 0
    warn_if_off(cfg.provenance)
    signer = credentials(args.model_dir) if cfg.provenance else None
    if args.interactive:
        from facelab.merge.interactive import serve

        serve(FrameMerger(predictor, cfg, Path(args.input_dir), aligned, Path(args.output_dir), mask_dir, signer),
              args.host, args.port, open_browser=not args.no_browser)
        return 0
    stats = run_merge(predictor, cfg, Path(args.input_dir), Path(args.output_dir), mask_dir, aligned, args.overwrite, signer)
    resumed = f", {stats.skipped} already done" if stats.skipped else ""
    marked = f"; the frames with a swapped face {EMBEDDED_NOTE}" if stats.marked else ""
    tuned = f"; {stats.tuned} frames with the options tuned in `facelab merge --interactive`" if stats.tuned else ""
    print(f"{args.output_dir}: merged {stats.merged} frames ({stats.faces} faces{resumed}) in {stats.seconds:.1f} s, "
          f"{stats.fps:.1f} frames/s{tuned}{marked}")
    return 0


def _cmd_video(args: argparse.Namespace) -> int:
    warn_if_off(args.provenance)
    stamp = Stamp(Credentials("face swap")) if args.provenance else None
    n = assemble_video(args.frames, args.output, args.like, args.fps, args.crf, audio=not args.no_audio, stamp=stamp)
    print(f"wrote {args.output} ({n} frames)" + (f"; it carries a signed C2PA manifest (check with `facelab verify "
                                                 f"{args.output}`)" if stamp else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="put the swapped face back into every frame",
                       description="For every frame and each of its extracted faces: crop, predict the swapped face "
                                   "and its mask, and composite it back. Frames without a face are copied. Each frame "
                                   "is merged with the options tuned for it in --interactive, else with these. "
                                   "Resumes where it stopped (redoing frames whose options changed) unless --overwrite.")
    add_flag(p, "--model-dir", ("--model_dir",), required=True, help="trained model folder (from `facelab train`)")
    add_flag(p, "--input-dir", ("--input_dir",), required=True, help="dst frames folder (e.g. WS/data_dst)")
    add_flag(p, "--output-dir", ("--output_dir",), required=True, help="merged frames folder (e.g. WS/data_dst/merged)")
    add_flag(p, "--output-mask-dir", ("--output_mask_dir",),
             help="also write each frame's pasted mask here (e.g. WS/data_dst/merged_mask)")
    add_flag(p, "--aligned-dir", ("--aligned_dir",), help="the dst faces with metadata (default: INPUT_DIR/aligned)")
    p.add_argument("--overwrite", action="store_true", help="merge frames again even if their output exists")
    p.add_argument("--preview", metavar="FRAME", help="merge only this frame (number or file name) and write "
                   "original | merged | mask side by side as one PNG")
    p.add_argument("--preview-output", help="where --preview writes (default: next to OUTPUT_DIR)")
    p.add_argument("--interactive", action="store_true",
                   help="tune the options frame by frame in the interactive merger, a page in your browser "
                        "(DeepFaceLab's interactive merger, with its keys); they are saved next to OUTPUT_DIR and "
                        "used by every later `facelab merge` into it")
    p.add_argument("--port", type=int, default=8766, help="--interactive: port to serve on (default: 8766; 0 = any free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="--interactive: loopback address to listen on (default: 127.0.0.1); the page serves this "
                        "machine only, reach it from afar through an SSH tunnel")
    p.add_argument("--no-browser", action="store_true", help="--interactive: only print the address, do not open a browser")
    p.add_argument("--config", help="YAML file with merge options (flags override it)")
    add_config_arguments(p, MergeConfig)
    p.set_defaults(func=_cmd_merge)

    v = sub.add_parser("video", help="assemble frames into a video with the source's frame rate and audio",
                       description="Encode a folder of frames as H.264 at the frame rate of --like, copying its "
                                   "audio track (use it for the merged frames and for the mask frames).")
    v.add_argument("--frames", required=True, help="folder of frames (e.g. WS/data_dst/merged)")
    v.add_argument("--like", help="source video: frame rate and audio come from it (e.g. WS/data_dst.mp4)")
    v.add_argument("-o", "--output", required=True, help="output video file (e.g. WS/result.mp4)")
    v.add_argument("--fps", type=float, help="frame rate when there is no --like video (overrides it otherwise)")
    v.add_argument("--crf", type=int, default=18, help="H.264 quality: 0 lossless .. 51 worst (default: 18)")
    v.add_argument("--no-audio", action="store_true", help="leave the audio out (e.g. for the mask video)")
    v.add_argument("--provenance", action=argparse.BooleanOptionalAction, default=True,
                   help="sign the video with a C2PA manifest saying facelab made it (default: on; --no-provenance "
                        "is for research pipelines and prints a warning)")
    v.set_defaults(func=_cmd_video)
