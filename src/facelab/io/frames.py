"""A video's frames as numbered image files, named the way DeepFaceLab names them (``00001.png`` is
source frame 0), so extraction, merge and the frames command agree on which file is which frame."""

from __future__ import annotations

from pathlib import Path

from facelab.core.config import check_range
from facelab.core.files import ensure_folder, remove_stale_temps
from facelab.core.progress import progress
from facelab.io.images import write_image
from facelab.io.video import iter_frames, probe


def frame_stem(index: int) -> str:
    """The file stem of source frame ``index`` (0-based): frames are numbered from 1."""
    return f"{index + 1:05d}"


def frame_name(index: int, fmt: str) -> str:
    return f"{frame_stem(index)}.{fmt}"


def extract_frames(video: Path, out_dir: Path, fps: float | None = None, fmt: str = "png",
                   jpeg_quality: int = 95) -> int:
    """Write the frames of ``video`` (all, or ``fps`` per second) into ``out_dir``; returns how many."""
    if fps is not None:
        check_range(fps, "fps", "frames", above=0)
    check_range(jpeg_quality, "jpeg_quality", "frames", low=1, high=100)
    info = probe(video)
    ensure_folder(out_dir, "output folder")
    remove_stale_temps(out_dir)
    total = info.frame_count if not fps else int(info.duration * min(fps, float(info.fps))) or None
    count = 0
    with progress(total=total, desc="frames", unit="frame") as bar:
        for index, frame in iter_frames(video, fps):
            write_image(out_dir / frame_name(index, fmt), frame, jpeg_quality)
            count += 1
            bar.update()
    return count
