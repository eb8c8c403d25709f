"""The 720p clip the extraction and merge benchmarks time: a shared sample clip, else a rendered one."""

from __future__ import annotations

import tempfile
from pathlib import Path

from facelab.io.video import probe


def find_720p_clip(rendered: str = "astronaut") -> Path:
    """The first 720p clip in ../shared/data/videos, else the rendered sample clip ``rendered``."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
    for clip in sorted(shared.glob("*.mp4")) if shared.is_dir() else []:
        if probe(clip).height == 720:
            return clip
    from facelab.samples.clips import make_sample_clips

    return make_sample_clips(Path(tempfile.gettempdir()) / "facelab-bench-clips", seconds=4.0)[rendered]
