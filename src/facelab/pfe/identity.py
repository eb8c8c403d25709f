"""Identity scoring of a swap: is the merged face the source person, and no longer the original dst person?

Every sampled frame's face becomes a PFE Gaussian and is compared with a fused template of the source
faceset (and of the dst person when given) by cosine on ``mu`` and by MLS. Merge calls
:func:`score_video` / :func:`score_frames` directly; ``facelab identity`` wraps them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from facelab.core.config import check_range
from facelab.core.errors import FacelabError
from facelab.core.progress import progress
from facelab.io.images import list_images, read_image
from facelab.io.video import is_video_file, iter_frames
from facelab.metrics.identity import SAME_PERSON_COSINE
from facelab.pfe.features import FaceFinder
from facelab.pfe.fusion import fuse
from facelab.pfe.model import PFEModel
from facelab.pfe.verify import cosine_scores, mls_scores

DEFAULT_THRESHOLD = SAME_PERSON_COSINE


@dataclass
class Template:
    """One person as a single Gaussian: the PFE fusion of ``count`` faces."""

    mu: np.ndarray
    sigma_sq: np.ndarray
    count: int


@dataclass
class FrameRecord:
    frame: int
    found: bool
    cos_source: float = float("nan")
    mls_source: float = float("nan")
    cos_dst: float = float("nan")
    mls_dst: float = float("nan")
    log_sigma_sq: float = float("nan")  # mean over dimensions: the face's uncertainty
    lost: bool = False


def _faces(model: PFEModel, finder: FaceFinder, frames: Iterable[tuple[int, np.ndarray]]):
    """``(index, mu, sigma_sq)`` per frame, ``mu`` None where no face was found."""
    for index, image in frames:
        lms = finder.find(image)
        if lms is None:
            yield index, None, None
            continue
        mu, sigma_sq = model.embed_crops(model.backbone.prepare(image, lms)[None])
        yield index, mu[0], sigma_sq[0]


def sample_frames(path: str | Path, every: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Frames of a video (every ``every``-th) or the images of a folder, as ``(index, bgr)``."""
    path = Path(path)
    if path.is_dir():
        yield from ((i, read_image(p)) for i, p in enumerate(list_images(path)) if i % every == 0)
    elif is_video_file(path):
        yield from ((i, f) for i, f in iter_frames(path) if i % every == 0)
    else:
        raise FacelabError(f"{path} is neither a folder of face images nor a video file; give one of those")


def make_template(model: PFEModel, path: str | Path, finder: FaceFinder | None = None, every: int = 1) -> Template:
    """Fuse every face found in a folder of images or in the sampled frames of a video."""
    finder = finder or FaceFinder()
    found = [(mu, s) for _, mu, s in _faces(model, finder, progress(sample_frames(path, every), desc="template"))
             if mu is not None]
    if not found:
        raise FacelabError(f"no face found in {path}; give images or a video that show the person's face")
    mu, sigma_sq = fuse(np.stack([m for m, _ in found]), np.stack([s for _, s in found]))
    return Template(mu, sigma_sq, len(found))


def _compare(mu: np.ndarray, sigma_sq: np.ndarray, t: Template) -> tuple[float, float]:
    return (float(cosine_scores(mu[None], t.mu[None])[0]),
            float(mls_scores(mu[None], sigma_sq[None], t.mu[None], t.sigma_sq[None])[0]))


def score_frames(frames: Iterable[tuple[int, np.ndarray]], model: PFEModel, source: Template,
                 dst: Template | None = None, threshold: float = DEFAULT_THRESHOLD,
                 finder: FaceFinder | None = None) -> tuple[list[FrameRecord], dict]:
    """Per-frame records and a summary. A frame *lost* the identity when its cosine to the source is below
    ``threshold``, or (with ``dst``) when its MLS to the dst person beats its MLS to the source."""
    records = []
    for index, mu, sigma_sq in _faces(model, finder or FaceFinder(), frames):
        if mu is None:
            records.append(FrameRecord(index, False))
            continue
        uncertainty = float(np.log(sigma_sq).mean()) if model.has_uncertainty else float("nan")
        rec = FrameRecord(index, True, *_compare(mu, sigma_sq, source), log_sigma_sq=uncertainty)
        if dst is not None:
            rec.cos_dst, rec.mls_dst = _compare(mu, sigma_sq, dst)
        rec.lost = rec.cos_source < threshold or (dst is not None and rec.mls_dst > rec.mls_source)
        records.append(rec)
    return records, summarise(records, threshold)


def summarise(records: list[FrameRecord], threshold: float) -> dict:
    faces = [r for r in records if r.found]
    out: dict = {"frames": len(records), "faces": len(faces), "threshold": threshold,
                 "lost_frames": [r.frame for r in faces if r.lost],
                 "no_face_frames": [r.frame for r in records if not r.found]}
    for key in ("cos_source", "mls_source", "cos_dst", "mls_dst", "log_sigma_sq"):
        values = np.array([getattr(r, key) for r in faces], np.float64)
        values = values[np.isfinite(values)]
        if len(values):
            out[f"{key}_mean"] = float(values.mean())
            out[f"{key}_p5"] = float(np.percentile(values, 5))
    return out


def score_video(video: str | Path, model: PFEModel, source: Template, dst: Template | None = None, every: int = 1,
                threshold: float = DEFAULT_THRESHOLD) -> tuple[list[FrameRecord], dict]:
    """:func:`score_frames` over every ``every``-th frame of a video."""
    check_range(every, "every", "identity", low=1)
    check_range(threshold, "threshold", "identity", low=-1, high=1)
    return score_frames(progress(sample_frames(video, every), desc="identity", unit="frame"), model, source, dst,
                        threshold)


def records_table(records: list[FrameRecord]) -> list[dict]:
    return [asdict(r) for r in records]
