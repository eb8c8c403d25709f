"""``facelab swap``: the one-shot workflow, with every training and merge option of ``train`` and ``merge``.

The two stages share four settings (``batch_size``, ``device``, ``precision``, ``workers``): one flag sets
both. ``--config FILE`` takes the same names: a ``train:`` and a ``merge:`` section, or one flat mapping
whose keys go to the stage that has them (a shared one to both).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from facelab.core.config import COMMAND_LINE, add_config_arguments, config_from_dict, given_options, read_yaml_mapping
from facelab.core.errors import FacelabError
from facelab.merge.config import MergeConfig
from facelab.provenance.stamp import EMBEDDED_NOTE, warn_if_off
from facelab.swap.config import SwapConfig, swap_default

SECTIONS = {"train": SwapConfig, "merge": MergeConfig}


def _names(cls: type) -> set[str]:
    return {n for f in dataclasses.fields(cls) for n in (f.name, *f.metadata.get("aliases", ()))}


def split_config_file(data: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """A swap config file's values per stage: its ``train:``/``merge:`` sections and its flat keys, each
    given to the stage(s) whose config has that name; a name neither has is one error naming the file."""
    parts: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, value in data.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise FacelabError(f"{source}: {key}: must be a mapping of option: value")
            parts[key].update(value)
            continue
        owners = [name for name, cls in SECTIONS.items() if key in _names(cls)]
        if not owners:
            raise FacelabError(f"{source}: unknown option {key}; see `facelab swap --help` for the valid names")
        for name in owners:
            parts[name][key] = value
    return parts


def _cmd_swap(args: argparse.Namespace) -> int:
    from facelab.swap.model_dir import resolve_config
    from facelab.workflow.swap import check_inputs, swap, workspace_of

    check_inputs(args.src, args.dst, args.dst_person)  # before any work, and before a config file is read
    source = args.config or "config"
    file = split_config_file(read_yaml_mapping(args.config), source) if args.config else {"train": {}, "merge": {}}
    merge_cfg = config_from_dict(MergeConfig, given_options(args, MergeConfig), COMMAND_LINE,
                                 base=config_from_dict(MergeConfig, file["merge"], source))
    train_flags = given_options(args, SwapConfig)
    ws = workspace_of(args.output, args.workspace)
    device = train_flags.get("device") or file["train"].get("device") or "auto"
    train_cfg = resolve_config(ws / "model", file["train"], source, train_flags, new=swap_default(device))
    warn_if_off(merge_cfg.provenance)
    stats = swap(args.src, args.dst, args.output, ws, args.iterations, merge_cfg=merge_cfg, train_cfg=train_cfg,
                 identity_every=args.identity_every, dst_person=args.dst_person)
    marked = f"; the video and the frames with a swapped face {EMBEDDED_NOTE}" if stats.marked else ""
    print(f"wrote {args.output} ({stats.frames} frames, {stats.faces} faces swapped){marked}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("swap", help="one shot: extract, train, merge and make the video",
                       description="Put the face of SRC into DST_VIDEO: extract both, train for --iterations, merge "
                                   "and assemble OUTPUT with DST_VIDEO's frame rate and audio. Work files go to "
                                   "--workspace; running the command again resumes. Every option of `facelab "
                                   "train` and `facelab merge` is here too; Ctrl-C during training saves the model "
                                   "and stops (run the command again to go on).")
    w.add_argument("src", help="src video, folder of photos/frames, or aligned faceset (the face to put in)")
    w.add_argument("dst", help="dst video (the one to change)")
    w.add_argument("-o", "--output", required=True, help="output video file")
    w.add_argument("--workspace", help="folder for frames, faces, model and merged frames (default: OUTPUT_workspace)")
    w.add_argument("--iterations", type=int, metavar="N",
                   help="train the model to iteration N (default: the config file's target_iter, else 9000 on a CPU with "
                        "its small 64 px network (about 31 minutes on 2 cores), 20000 on a GPU with the SAEHD defaults)")
    w.add_argument("--dst-person", metavar="PATH",
                   help="photos, a video or a faceset of the one person in DST to replace when DST shows several "
                        "(the others are left as they are)")
    w.add_argument("--identity-every", type=int, default=0, metavar="N",
                   help="afterwards, score every N-th frame of the result for the source identity into "
                        "WORKSPACE/identity.json (default: 0, off)")
    w.add_argument("--config", help="YAML file of training and merge options: `train:` and `merge:` sections, or "
                                    "flat names (flags override it)")
    add_config_arguments(w, SwapConfig, exclude=("target_iter",))
    add_config_arguments(w, MergeConfig, exclude=[n for n in _names(MergeConfig) if n in _names(SwapConfig)])
    w.set_defaults(func=_cmd_swap)
