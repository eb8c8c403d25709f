"""``facelab enhancer train|eval``: the face enhancer behind ``faceset enhance`` and merge's ``--super-resolution``."""

from __future__ import annotations

import argparse
import json

from facelab.core.config import add_config_arguments, config_from_args
from facelab.enhance.config import EnhancerConfig


def _cmd_train(args: argparse.Namespace) -> int:
    from facelab.enhance.model_dir import load_saved_config
    from facelab.enhance.train import train

    cfg = config_from_args(EnhancerConfig, args, base=load_saved_config(args.model_dir))
    result = train(cfg, args.data, args.model_dir)
    figures = "; ".join(f"{level} {row['psnr']:.2f} dB (bicubic {row['psnr_bicubic']:.2f})"
                        for level, row in result.held_out.items()) or "no held-out faces"
    print(f"{result.stopped} at iteration {result.iteration}; held-out PSNR {figures}; enhancer saved in {args.model_dir}")
    if result.stopped == "interrupted":
        raise KeyboardInterrupt  # saved; exit 130 like every command stopped by Ctrl-C
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from facelab.core.files import atomic_write_text
    from facelab.enhance.evaluate import held_out_report

    report = held_out_report(args.model_dir, args.data, args.device, args.grid, args.grid_faces)
    text = json.dumps(report, indent=2)
    if args.output:
        atomic_write_text(args.output, text + "\n")
    print(text)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("enhancer", help="train and evaluate the face enhancer (faceset enhance, merge --super-resolution)")
    en = p.add_subparsers(dest="enhancer_command", required=True, metavar="ACTION")

    data_help = ("folder of face images: CelebA's folder (images/ and identity_CelebA.txt), one sub-folder per person "
                 "(LFW), or a faceset; repeat for several")
    tr = en.add_parser("train", help="Train the face enhancer on sharp faces, with degradations simulated.",
                       description="Train a small face super-resolution network: every face is blurred, shrunk 2-4x, "
                                   "noised, JPEG-compressed and enlarged again, and the network learns to restore "
                                   "it. Held-out people are scored against bicubic enlargement. An existing "
                                   "--model-dir is resumed; options that fix the network cannot change.")
    tr.add_argument("--data", action="append", required=True, metavar="DIR", help=data_help)
    tr.add_argument("--model-dir", required=True, help="folder for the enhancer, config.yaml, losses, eval.csv, preview.png")
    tr.add_argument("--config", help="YAML file of options (flags given on the command line override it)")
    add_config_arguments(tr, EnhancerConfig)
    tr.set_defaults(func=_cmd_train)

    ev = en.add_parser("eval", help="PSNR/SSIM against bicubic on the held-out people, and a before/after grid.",
                       description="Score every face of the people training held out (the model's eval_people and "
                                   "seed decide who) at three degradation levels, the enhancer against bicubic "
                                   "enlargement of the same low-res face; prints JSON (mean and std per level).")
    ev.add_argument("--model-dir", required=True, help="an enhancer folder made by facelab enhancer train")
    ev.add_argument("--data", action="append", required=True, metavar="DIR",
                    help="a data folder the enhancer was trained with; repeat for several")
    ev.add_argument("--grid", help="also write low-res | bicubic | enhanced | original rows to this image (.png, .jpg)")
    ev.add_argument("--grid-faces", type=int, default=2, help="held-out faces in the grid, each at every level (default: 2)")
    ev.add_argument("-o", "--output", help="also write the JSON report to this file")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    ev.set_defaults(func=_cmd_eval)
