"""``facelab demo``: the whole face-swap workflow on the sample clips, small enough for a CPU in minutes.

It swaps the man of ``../shared/data/videos/lp_d18.mp4`` into ``lp_d19.mp4`` (two real men filmed on
the same grey background, with audio; the real clips beside the checkout); where that folder is absent,
it renders two short clips from real portraits that ship in installed packages
(:mod:`facelab.samples.clips`) as ``WORKSPACE/data_src.mp4`` and ``data_dst.mp4``. The result is
``WORKSPACE/result.mp4`` with the dst clip's audio.
"""

from __future__ import annotations

import logging
from pathlib import Path

from facelab.core.errors import FacelabError
from facelab.merge.merger import MergeStats
from facelab.swap.config import CPU_SWAP, SwapConfig

log = logging.getLogger(__name__)
# `facelab swap`'s CPU network (64 px LIAE-UD, narrow layers) on every machine, for 3000 iterations (about 10
# minutes of 2 cores; 75 % of held-out swaps are the src man there, docs/training.md) where `facelab swap`
# trains it to 9000: the real presets (quick96, the saehd defaults) need far more than a demo can give them.
DEMO_TRAIN = SwapConfig(**{**CPU_SWAP, "eval_every": 500, "target_iter": 3000})
# ../shared beside the checkout: found from the source tree (editable install) or the working directory.
SHARED_VIDEO_DIRS = (Path(__file__).resolve().parents[4] / "shared" / "data" / "videos",
                     Path.cwd().parent / "shared" / "data" / "videos")
DEMO_SRC, DEMO_DST = "lp_d18.mp4", "lp_d19.mp4"


def demo_clips(workspace: Path) -> tuple[Path, Path]:
    """(src, dst) clips: the shared real clips if they are there, else rendered ones."""
    for folder in SHARED_VIDEO_DIRS:
        if (folder / DEMO_SRC).is_file() and (folder / DEMO_DST).is_file():
            return folder / DEMO_SRC, folder / DEMO_DST
    src, dst = workspace / "data_src.mp4", workspace / "data_dst.mp4"
    if not (src.is_file() and dst.is_file()):
        from facelab.samples.clips import make_sample_clips

        clips = make_sample_clips(workspace / "sample_clips", seconds=3.0)
        clips["astronaut"].replace(src)
        clips["hopper"].replace(dst)
    return src, dst


def run_demo(workspace: Path, iterations: int) -> MergeStats:
    """The demo swap into ``WORKSPACE/result.mp4``, scored for identity on every 5th frame."""
    from facelab.workflow.swap import swap

    try:
        workspace.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FacelabError(f"cannot create workspace {workspace} ({exc.strerror}); pass --workspace DIR") from None
    src, dst = demo_clips(workspace)
    log.info("demo: swapping %s into %s (%d iterations)", src.name, dst.name, iterations)
    return swap(src, dst, workspace / "result.mp4", workspace=workspace, iterations=iterations, train_cfg=DEMO_TRAIN,
                identity_every=5)
