"""Sample clips for the demo and tests, made from real face photos that ship inside installed packages.

The project's real sample data lives in ``../shared/data`` (see its MANIFEST.md). Where that folder is
absent, :func:`make_sample_clips` renders two short 720p clips with audio from two public-domain
portraits that come with scikit-image (astronaut Eileen Collins) and matplotlib (Grace Hopper): the
camera zooms, pans and rolls over a real face, so detection, alignment, training and merge all see a
real person. Install them with ``pip install facelab[samples]``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facelab.core.errors import FacelabError
from facelab.core.files import atomic_path
from facelab.io.video import write_video


def sample_photos() -> dict[str, np.ndarray]:
    """Two real portraits (BGR) from installed packages, keyed by a short name."""
    try:
        import matplotlib
        import skimage.data
    except ImportError:
        raise FacelabError("sample photos need scikit-image and matplotlib; run: pip install 'facelab[samples]'") from None
    astronaut = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    hopper_path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    hopper = cv2.imread(str(hopper_path))
    if hopper is None:
        raise FacelabError(f"{hopper_path} is missing from matplotlib; reinstall matplotlib")
    return {"astronaut": astronaut[:300, 60:420], "hopper": hopper}


def render_clip(photo: np.ndarray, n_frames: int, width: int, height: int, seed: int) -> list[np.ndarray]:
    """Frames of a slow camera move (zoom, pan, roll, light change) over ``photo`` on a blurred backdrop."""
    rng = np.random.default_rng(seed)
    backdrop = cv2.GaussianBlur(cv2.resize(photo, (width, height)), (0, 0), 25)
    ph, pw = photo.shape[:2]
    base_scale = 0.8 * height / ph
    phases = rng.uniform(0, 2 * np.pi, 4)
    frames = []
    for i in range(n_frames):
        t = i / max(1, n_frames - 1)
        scale = base_scale * (1.0 + 0.15 * np.sin(2 * np.pi * t + phases[0]))
        angle = 8.0 * np.sin(2 * np.pi * t + phases[1])
        cx = width / 2 + 0.15 * width * np.sin(2 * np.pi * t + phases[2])
        cy = height / 2 + 0.05 * height * np.sin(2 * np.pi * t + phases[3])
        mat = cv2.getRotationMatrix2D((pw / 2, ph / 2), angle, scale)
        mat[:, 2] += (cx - pw / 2, cy - ph / 2)
        frame = cv2.warpAffine(photo, mat, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_TRANSPARENT, dst=backdrop.copy())
        gain = 1.0 + 0.1 * np.sin(4 * np.pi * t)
        frames.append(cv2.convertScaleAbs(frame, alpha=gain))
    return frames


def make_sample_clips(out_dir: str | Path, seconds: float = 3.0, fps: int = 25, width: int = 1280,
                      height: int = 720) -> dict[str, Path]:
    """Write ``<name>.mp4`` (H.264 + AAC tone) for each sample photo; reuse clips already there."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clips = {}
    for k, (name, photo) in enumerate(sample_photos().items()):
        path = out_dir / f"{name}.mp4"
        if not path.exists():
            n = int(seconds * fps)
            t = np.arange(int(seconds * 44100)) / 44100
            tone = 0.2 * np.sin(2 * np.pi * (330 + 110 * k) * t)[None]
            with atomic_path(path) as tmp:
                write_video(tmp, render_clip(photo, n, width, height, seed=k), fps, audio=tone)
        clips[name] = path
    return clips
