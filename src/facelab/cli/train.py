"""``facelab train`` (DeepFaceLab's "train SAEHD / Quick96 / Original") and ``facelab export``."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

from facelab.cli.launch import add_gpus_option
from facelab.core.config import add_config_arguments, add_flag, given_options, read_yaml_mapping
from facelab.core.distributed import main_process
from facelab.core.errors import FacelabError
from facelab.swap.config import SwapConfig
from facelab.swap.export import FORMATS as EXPORT_FORMATS
from facelab.swap.model_dir import load_saved_config, resolve_config


def resolve_train_config(args: argparse.Namespace) -> SwapConfig:
    """Saved config of an existing model (or the defaults), then ``--config FILE``, then typed flags."""
    config = getattr(args, "config", None)
    return resolve_config(args.model_dir, read_yaml_mapping(config) if config else None, config or "config",
                          given_options(args, SwapConfig))


def _cmd_train(args: argparse.Namespace) -> int:
    from facelab.swap.train import train

    cfg = resolve_train_config(args)
    if not cfg.pretrain and not (args.src and args.dst):
        raise FacelabError("train needs --src and --dst faceset folders (or --pretrain with --pretrain-faceset)")
    if args.view and main_process():  # under torchrun, rank 0 serves the view
        from facelab.core.training_view import alongside

        view = alongside(args.model_dir, args.view_host, args.view_port, open_browser=not args.no_browser)
    else:
        view = contextlib.nullcontext()
    with view:
        result = train(cfg, args.src, args.dst, args.model_dir)
    if main_process():  # under torchrun, rank 0 speaks for the run
        print(f"{result.stopped} at iteration {result.iteration}; held-out SSIM {result.ssim_mean:.4f} +- {result.ssim_std:.4f}; "
              f"model saved in {args.model_dir}")
    if result.stopped == "interrupted":
        raise KeyboardInterrupt  # saved; exit 130 like every command stopped by Ctrl-C
    return 0


def _cmd_view(args: argparse.Namespace) -> int:
    from facelab.core.training_view import serve

    serve(args.model_dir, args.host, args.port, open_browser=not args.no_browser)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from facelab.swap.export import deepfacelive_aligner, export_model

    path, diff = export_model(args.model_dir, args.format, args.output)
    result = {"path": str(path), "format": args.format, "max_abs_diff_vs_pytorch": diff}
    if args.format == "dfm":  # what to set in DeepFaceLive so it cuts the faces the model was trained on
        cfg = load_saved_config(Path(args.model_dir))
        result["deepfacelive_face_aligner"] = deepfacelive_aligner(cfg.face_type, cfg.resolution)
    print(json.dumps(result))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a face-swap model (original, saehd, quick96)",
                       description="Train a face-swap model on a src and a dst faceset. An existing --model-dir is "
                                   "resumed; options that fix the network cannot change, all others can.")
    # the other spellings: the reference ports' and DeepFaceLab's own (--training-data-src-dir)
    add_flag(p, "--src", ("--training_data_src", "--training-data-src-dir"),
             help="src faceset folder (the face to put in), e.g. WS/data_src/aligned")
    add_flag(p, "--dst", ("--training_data_dst", "--training-data-dst-dir"),
             help="dst faceset folder (the face to replace), e.g. WS/data_dst/aligned")
    add_flag(p, "--model-dir", ("--model_dir",), required=True, help="folder for weights, config.yaml, losses and previews")
    p.add_argument("--config", help="YAML file of options (flags given on the command line override it)")
    view = p.add_argument_group("training view")
    view.add_argument("--view", action="store_true",
                      help="show the live training view, a page in your browser: the preview grid and the loss, SSIM "
                           "and identity curves as they come, with keys to save, refresh the preview or stop and save")
    view.add_argument("--view-port", type=int, default=8767, help="port of the view (default: 8767; 0 = any free port)")
    view.add_argument("--view-host", default="127.0.0.1",
                      help="loopback address of the view (default: 127.0.0.1; this machine only, use an SSH tunnel)")
    view.add_argument("--no-browser", action="store_true", help="only print the view's address, do not open a browser")
    add_config_arguments(p, SwapConfig)
    add_gpus_option(p)
    p.set_defaults(func=_cmd_train)

    v = sub.add_parser("view", help="watch a model folder's training live in your browser (preview, curves, keys)",
                       description="Serve the training view of MODEL_DIR (a swap or XSeg model folder): the preview "
                                   "grid and the loss, SSIM and identity curves, refreshed as the trainer writes "
                                   "them; S saves, P writes a new preview, Enter stops the training after saving. "
                                   "Ctrl-C stops the view, not the training.")
    v.add_argument("model_dir", help="a model folder that `facelab train` (or `facelab xseg train`) writes")
    v.add_argument("--port", type=int, default=8767, help="port to serve on (default: 8767; 0 = any free port)")
    v.add_argument("--host", default="127.0.0.1",
                   help="loopback address to listen on (default: 127.0.0.1); the view serves this machine only, "
                        "reach it from afar through an SSH tunnel")
    v.add_argument("--no-browser", action="store_true", help="only print the address, do not open a browser")
    v.set_defaults(func=_cmd_view)

    e = sub.add_parser("export", help="export a trained swap generator to ONNX, TorchScript or DeepFaceLive's DFM",
                       description="Export dst face -> swapped face + masks, checked against PyTorch on random faces. "
                                   "--format dfm writes the ONNX layout DeepFaceLive loads as a face-swap model (put "
                                   "the file in its dfm_models folder) and prints the face aligner settings that "
                                   "cut the faces the model was trained on.")
    add_flag(e, "--model-dir", ("--model_dir",), required=True, help="a model folder made by facelab train")
    e.add_argument("--format", choices=EXPORT_FORMATS, default="onnx", help="export format (default: onnx)")
    e.add_argument("-o", "--output", help="output file (default: MODEL_DIR/swap.onnx, swap.ts, or MODEL_DIR_NAME.dfm "
                                          "in MODEL_DIR)")
    e.set_defaults(func=_cmd_export)
