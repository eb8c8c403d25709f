"""``facelab demo``: the face-swap workflow on the sample clips (see :mod:`facelab.workflow.demo`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from facelab.workflow import demo


def _cmd_demo(args: argparse.Namespace) -> int:
    workspace = Path(args.workspace)
    start = time.perf_counter()
    stats = demo.run_demo(workspace, args.iterations)
    print(f"demo finished in {time.perf_counter() - start:.0f} s: {workspace / 'result.mp4'} "
          f"({stats.frames} frames, {stats.faces} faces swapped); model and preview.png in {workspace / 'model'}; "
          f"identity scores in {workspace / 'identity.json'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run extract -> train -> merge -> video on the sample clips",
                       description=demo.__doc__.split("\n\n")[0])
    p.add_argument("--workspace", default="workspace", help="workspace folder (default: ./workspace)")
    p.add_argument("--iterations", type=int, default=demo.DEMO_TRAIN.target_iter,
                   help=f"training iterations (default: {demo.DEMO_TRAIN.target_iter}, about 10 minutes on 2 cores; "
                        "`facelab swap` trains the same network to 9000)")
    p.set_defaults(func=_cmd_demo)
