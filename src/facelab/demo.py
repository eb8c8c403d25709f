"""``facelab demo``: the whole face-swap workflow on the sample clips, small enough for a CPU in minutes.

It swaps the man of ``../shared/data/videos/lp_d18.mp4`` into ``lp_d19.mp4`` (two real men filmed on
the same grey background, with audio; the real clips beside the checkout); where that folder is absent,
it renders two short clips from real portraits that ship in installed packages
(:mod:`facelab.io.samples`) as ``WORKSPACE/data_src.mp4`` and ``data_dst.mp4``. The result is
``WORKSPACE/result.mp4`` with the dst clip's audio.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from facelab.core.errors import FacelabError

log = logging.getLogger(__name__)
# A small SAEHD (64 px LIAE-UD, narrow layers) that learns a recognisable swap in a few CPU minutes;
# the real presets (quick96, saehd defaults) need far more iterations than a demo can give them.
DEMO_TRAIN_FLAGS = ["--resolution", "64", "--face-type", "whole", "--archi", "liae-ud", "--ae-dims", "64",
                    "--e-dims", "16", "--d-dims", "16", "--d-mask-dims", "8", "--batch-size", "8", "--lr", "5e-4",
                    "--eval-every", "200"]
# ../shared beside the checkout: found from the source tree (editable install) or the working directory.
SHARED_VIDEO_DIRS = (Path(__file__).resolve().parents[3] / "shared" / "data" / "videos",
                     Path.cwd().parent / "shared" / "data" / "videos")
DEMO_SRC, DEMO_DST = "lp_d18.mp4", "lp_d19.mp4"


def demo_clips(workspace: Path) -> tuple[Path, Path]:
    """(src, dst) clips: the shared real clips if they are there, else rendered ones."""
    for folder in SHARED_VIDEO_DIRS:
        if (folder / DEMO_SRC).is_file() and (folder / DEMO_DST).is_file():
            return folder / DEMO_SRC, folder / DEMO_DST
    src, dst = workspace / "data_src.mp4", workspace / "data_dst.mp4"
    if not (src.is_file() and dst.is_file()):
        from facelab.io.samples import make_sample_clips

        clips = make_sample_clips(workspace / "sample_clips", seconds=3.0)
        clips["astronaut"].replace(src)
        clips["hopper"].replace(dst)
    return src, dst


def _cmd_demo(args: argparse.Namespace) -> int:
    from facelab.merge.oneshot import swap

    workspace = Path(args.workspace)
    try:
        workspace.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FacelabError(f"cannot create workspace {workspace} ({exc.strerror}); pass --workspace DIR") from None
    src, dst = demo_clips(workspace)
    log.info("demo: swapping %s into %s (%d iterations)", src.name, dst.name, args.iterations)
    start = time.perf_counter()
    stats = swap(src, dst, workspace / "result.mp4", workspace=workspace, iterations=args.iterations, model="saehd",
                 train_args=DEMO_TRAIN_FLAGS, identity_every=5)
    print(f"demo finished in {time.perf_counter() - start:.0f} s: {workspace / 'result.mp4'} "
          f"({stats.frames} frames, {stats.faces} faces swapped); model and preview.png in {workspace / 'model'}; "
          f"identity scores in {workspace / 'identity.json'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run extract -> train -> merge -> video on the sample clips",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--workspace", default="workspace", help="workspace folder (default: ./workspace)")
    p.add_argument("--iterations", type=int, default=1000, help="training iterations (default: 1000, a few minutes on a CPU)")
    p.set_defaults(func=_cmd_demo)
