"""``facelab xseg edit|import-masks|export-masks|train|apply|remove|export``: DeepFaceLab's XSeg steps."""

from __future__ import annotations

import argparse
import json

from facelab.cli.launch import add_gpus_option
from facelab.core.config import add_config_arguments, add_flag, config_from_args
from facelab.core.device import DEVICE_HELP, DEVICES
from facelab.core.distributed import main_process
from facelab.xseg.config import XSegConfig


def _cmd_edit(args: argparse.Namespace) -> int:
    from facelab.xseg.editor import serve

    serve(args.faceset, args.host, args.port, open_browser=not args.no_browser)
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from facelab.xseg.labelling import import_masks

    print(f"{args.faceset}: labelled {import_masks(args.faceset, args.masks)} faces from {args.masks}")
    return 0


def _cmd_export_masks(args: argparse.Namespace) -> int:
    from facelab.xseg.labelling import export_masks

    print(f"wrote {export_masks(args.faceset, args.output, args.applied)} masks to {args.output}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from facelab.xseg.model_dir import load_saved_config
    from facelab.xseg.train import train

    cfg = config_from_args(XSegConfig, args, base=load_saved_config(args.model_dir))
    result = train(cfg, args.faceset, args.model_dir)
    if main_process():  # under torchrun, rank 0 speaks for the run
        print(f"{result.stopped} at iteration {result.iteration}; held-out IoU {result.iou:.4f}; "
              f"segmenter saved in {args.model_dir}")
    if result.stopped == "interrupted":
        raise KeyboardInterrupt  # saved; exit 130 like every command stopped by Ctrl-C
    return 0


def _cmd_apply(args: argparse.Namespace) -> int:
    from facelab.xseg.apply import apply_segmenter

    n = apply_segmenter(args.faceset, args.model_dir, args.device, args.batch_size)
    print(f"{args.faceset}: applied the XSeg mask of {args.model_dir} to {n} faces")
    return 0


def _cmd_remove(args: argparse.Namespace) -> int:
    from facelab.xseg.apply import remove_masks

    masks, labels = remove_masks(args.faceset, args.labels)
    print(f"{args.faceset}: removed {masks} applied XSeg masks" + (f" and {labels} labels" if args.labels else ""))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from facelab.xseg.export import export_segmenter

    path, diff = export_segmenter(args.model_dir, args.format, args.output)
    print(json.dumps({"path": str(path), "format": args.format, "max_abs_diff_vs_pytorch": diff}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("xseg", help="label, train and apply the XSeg face segmenter (masks for hair, hands, glasses)")
    xs = p.add_subparsers(dest="xseg_command", required=True, metavar="ACTION")

    ed = xs.add_parser("edit", help="Label faces in the XSeg editor, a page in your browser (XSeg mask - edit).",
                        description="Serve the XSeg editor for one faceset: draw include/exclude polygons on each "
                                    "face; labels are saved into the faces' metadata as you go. Ctrl-C stops it.")
    ed.add_argument("faceset", help="faceset folder to label, e.g. WS/data_dst/aligned")
    ed.add_argument("--port", type=int, default=8765, help="port to serve on (default: 8765; 0 = any free port)")
    ed.add_argument("--host", default="127.0.0.1",
                    help="loopback address to listen on (default: 127.0.0.1); the editor serves this machine only, "
                         "reach it from afar through an SSH tunnel")
    ed.add_argument("--no-browser", action="store_true", help="only print the address, do not open a browser")
    ed.set_defaults(func=_cmd_edit)

    imp = xs.add_parser("import-masks", help="Label faces with mask images painted in any editor (white = face).",
                        description="Read one binary mask image per face (same file stem, same size; white = face, "
                                    "black = not face) and store it in the face as include/exclude polygons.")
    imp.add_argument("faceset", help="faceset folder to label, e.g. WS/data_dst/aligned")
    imp.add_argument("--masks", required=True, help="folder of mask images named like the faces")
    imp.set_defaults(func=_cmd_import)

    exm = xs.add_parser("export-masks", help="Write the labelled faces' masks as PNG images to edit and import again.",
                        description="Write OUTPUT/<face stem>.png (255 = face) for every labelled face.")
    exm.add_argument("faceset", help="faceset folder")
    exm.add_argument("-o", "--output", required=True, help="folder for the mask images")
    exm.add_argument("--applied", action="store_true", help="also write the applied XSeg mask of faces without a "
                     "label, to correct the segmenter's mistakes and import them as labels")
    exm.set_defaults(func=_cmd_export_masks)

    tr = xs.add_parser("train", help="Train XSeg on the labelled faces of one or more facesets.",
                       description="Train the face segmenter on every labelled face of the facesets (unlabelled "
                                   "faces are ignored). An existing --model-dir is resumed; options that fix the "
                                   "network cannot change, all others can.")
    tr.add_argument("--faceset", action="append", required=True, metavar="DIR",
                    help="labelled faceset folder; repeat for several (e.g. data_src/aligned and data_dst/aligned)")
    add_flag(tr, "--model-dir", ("--model_dir",), required=True,
             help="folder for the segmenter, config.yaml, losses and preview.png")
    tr.add_argument("--config", help="YAML file of options (flags given on the command line override it)")
    add_config_arguments(tr, XSegConfig)
    add_gpus_option(tr)
    tr.set_defaults(func=_cmd_train)

    ap = xs.add_parser("apply", help="Apply the trained XSeg mask to every face of a faceset (XSeg trained mask - apply).",
                       description="Run the segmenter over every face and store its mask in the face's metadata; "
                                   "masked SAEHD training and merge --mask-mode segmenter then use it.")
    ap.add_argument("faceset", help="faceset folder, e.g. WS/data_dst/aligned")
    add_flag(ap, "--model-dir", ("--model_dir",), required=True, help="a segmenter folder made by facelab xseg train")
    ap.add_argument("--device", default="auto", metavar="{" + ",".join(DEVICES) + "}",
                    help=f"where the segmenter runs: {DEVICE_HELP} (default: auto)")
    ap.add_argument("--batch-size", type=int, default=16, help="faces per segmenter call (default: 16)")
    ap.set_defaults(func=_cmd_apply)

    rm = xs.add_parser("remove", help="Remove the applied XSeg masks from a faceset (XSeg trained mask - remove).",
                       description="Delete the applied masks; labels stay unless --labels.")
    rm.add_argument("faceset", help="faceset folder")
    rm.add_argument("--labels", action="store_true", help="also delete the labels (XSeg mask - remove)")
    rm.set_defaults(func=_cmd_remove)

    ex = xs.add_parser("export", help="Export the trained segmenter to ONNX or TorchScript, checked against PyTorch.",
                       description="Export face (N,3,R,R) RGB in [0,1] -> mask probability (N,1,R,R).")
    add_flag(ex, "--model-dir", ("--model_dir",), required=True, help="a segmenter folder made by facelab xseg train")
    ex.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help="export format (default: onnx)")
    ex.add_argument("-o", "--output", help="output file (default: MODEL_DIR/segmenter.onnx or segmenter.ts)")
    ex.set_defaults(func=_cmd_export)
