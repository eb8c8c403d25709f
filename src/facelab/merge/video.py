"""``facelab video``: merged frames back into a video at the source's frame rate, with its audio."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from facelab.core.config import check_range
from facelab.core.errors import FacelabError
from facelab.core.files import atomic_path
from facelab.core.progress import progress
from facelab.io.images import list_images, read_image
from facelab.io.video import probe, write_video
from facelab.provenance.stamp import Stamp

log = logging.getLogger(__name__)


def _frames(paths: list[Path], bar) -> Iterator[np.ndarray]:
    size = None
    for path in paths:
        bar.update()
        img = read_image(path)
        if size is None:
            size = img.shape[:2]
        elif img.shape[:2] != size:
            raise FacelabError(f"{path} is {img.shape[1]}x{img.shape[0]} but the first frame is {size[1]}x{size[0]}; "
                               "a video needs frames of one size")
        yield img


def assemble_video(frames_dir: str | Path, output: str | Path, like: str | Path | None = None,
                   fps: float | None = None, crf: int = 18, audio: bool = True, stamp: Stamp | None = None) -> int:
    """Encode the images of ``frames_dir`` (sorted by name) as H.264; returns the frame count.

    With ``like`` the frame rate and the audio track (copied, not re-encoded) come from that video.
    The file appears only when complete (written under a temporary name, then renamed); with ``stamp``
    it is signed (the frames carry their marks from the merge).
    """
    frames_dir, output = Path(frames_dir), Path(output)
    paths = list_images(frames_dir)
    if not paths:
        raise FacelabError(f"{frames_dir} holds no images; run `facelab merge` first")
    info = probe(like) if like is not None else None
    if fps is None:
        if info is None:
            raise FacelabError("give --like SOURCE_VIDEO (frame rate and audio) or --fps")
        fps = info.fps
    check_range(float(fps), "fps", "video", above=0, high=1000)
    if info is not None and abs(info.frame_count - len(paths)) > 1:
        log.warning("%s has %d frames but %s has %d; the video will not line up with its audio",
                    frames_dir, len(paths), like, info.frame_count)
    check_range(crf, "crf", "video", low=0, high=51)
    audio_from = like if audio and info is not None and info.has_audio else None
    try:
        with atomic_path(output) as partial, progress(total=len(paths), desc="video", unit="frame") as bar:
            count = write_video(partial, _frames(paths, bar), Fraction(fps), crf, audio_from=audio_from)
    except OSError as exc:
        raise FacelabError(f"cannot write {output} ({exc.strerror or exc}); choose a writable path") from None
    if stamp is not None:
        stamp.sign(output)
    return count
