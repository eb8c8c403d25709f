"""Who is in a face, by the calibrated same-person rule: compare two inputs, or check every frame of a swap.

An *input* is an image, a folder of images, a faceset (its stored landmarks are used, nothing is
detected) or a video. :func:`faces_of` turns one into the faces found in it, each a PFE Gaussian
(unit variance without a trained uncertainty module); a face is judged against a person's faces by
the model's :class:`~facelab.pfe.rule.SameRule` (by default dlib's L2 distance with the threshold
fitted on LFW). ``facelab identity`` and the one-shot swap's ``identity.json`` use this module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from facelab.core.config import check_range
from facelab.core.errors import FacelabError
from facelab.core.progress import progress
from facelab.face.metadata import meta_from_bytes
from facelab.faceset.store import PACK_NAME, Faceset
from facelab.io.images import is_image_file, list_images, read_image
from facelab.io.video import is_video_file, iter_frames
from facelab.pfe.features import FaceFinder
from facelab.pfe.model import PFEModel
from facelab.pfe.rule import SameRule

WHO = ("src", "dst", "neither", "lost")


@dataclass
class Faces:
    """The faces found in one input: ``mu`` and ``sigma_sq`` per face, and which sampled items had none."""

    source: str
    mu: np.ndarray  # (N, D)
    sigma_sq: np.ndarray  # (N, D)
    sampled: int  # images or frames looked at
    missing: list[int]  # indices of those without a face

    def __len__(self) -> int:
        return len(self.mu)

    def uncertainty(self) -> float:
        """Mean log sigma^2 over faces and dimensions (PFE's per-face uncertainty, averaged)."""
        return float(np.log(self.sigma_sq).mean()) if len(self) else float("nan")


def sample_frames(path: str | Path, every: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Frames of a video (every ``every``-th), the images of a folder, or one image, as ``(index, bgr)``."""
    path = Path(path)
    if every < 1:
        raise FacelabError(f"--every must be at least 1, got {every}")
    if path.is_dir():
        yield from ((i, read_image(p)) for i, p in enumerate(list_images(path)) if i % every == 0)
    elif path.is_file() and is_video_file(path):
        yield from ((i, f) for i, f in iter_frames(path) if i % every == 0)
    elif path.is_file() and is_image_file(path):
        yield 0, read_image(path)
    else:
        raise FacelabError(f"{path} is not an image, a folder of face images or a video file; give one of those")


def _is_faceset(path: Path) -> bool:
    if (path / PACK_NAME).is_file():
        return True
    images = list_images(path)
    return bool(images) and meta_from_bytes(images[0].read_bytes(), str(images[0])) is not None


def _faceset_crops(model: PFEModel, folder: Path, every: int) -> Iterator[tuple[int, np.ndarray]]:
    faceset = Faceset.open(folder)
    for i in range(0, len(faceset), every):
        yield i, model.backbone.prepare(faceset.image(i), faceset.metas[i].landmarks)


def _detected_crops(model: PFEModel, frames: Iterable[tuple[int, np.ndarray]],
                    finder: FaceFinder) -> Iterator[tuple[int, np.ndarray | None]]:
    for index, image in frames:
        lms = finder.find(image)
        yield index, None if lms is None else model.backbone.prepare(image, lms)


def embed_crops(model: PFEModel, crops: Iterable[tuple[int, np.ndarray | None]],
                chunk: int = 32) -> Iterator[tuple[int, np.ndarray | None, np.ndarray | None]]:
    """``(index, mu, sigma_sq)`` in order, ``chunk`` faces to a network call; None where no face was found."""
    pending: list[tuple[int, np.ndarray | None]] = []

    def flush():
        faces = [c for _, c in pending if c is not None]
        mu, sigma_sq = model.embed_crops(np.stack(faces)) if faces else (None, None)
        k = 0
        for index, crop in pending:
            if crop is None:
                yield index, None, None
            else:
                yield index, mu[k], sigma_sq[k]
                k += 1
        pending.clear()

    for item in crops:
        pending.append(item)
        if sum(c is not None for _, c in pending) == chunk:
            yield from flush()
    yield from flush()


def faces_of(model: PFEModel, path: str | Path, every: int = 1, finder: FaceFinder | None = None) -> Faces:
    """Every face found in an image, a folder of images, a faceset or the sampled frames of a video."""
    path = Path(path)
    if path.is_dir() and _is_faceset(path):
        crops = _faceset_crops(model, path, every)
    else:
        crops = _detected_crops(model, sample_frames(path, every), finder or FaceFinder())
    rows = list(embed_crops(model, progress(crops, desc=f"faces of {path.name}", unit="img")))
    found = [(mu, s) for _, mu, s in rows if mu is not None]
    if not found:
        raise FacelabError(f"no face found in {path}; give images or a video that show the person's face")
    return Faces(str(path), np.stack([m for m, _ in found]), np.stack([s for _, s in found]), len(rows),
                 [i for i, mu, _ in rows if mu is None])


def compare(rule: SameRule, a: Faces, b: Faces) -> dict:
    """Are two inputs the same person? The mean score over every pair of their faces, and the rule's verdict."""
    scores = rule.person_scores(a.mu, a.sigma_sq, b.mu, b.sigma_sq)
    score = float(scores.mean())
    return {"a": a.source, "b": b.source, "faces_a": len(a), "faces_b": len(b), "missing_a": len(a.missing),
            "missing_b": len(b.missing), "metric": rule.metric, "score": score, "same": bool(rule.same(score)),
            "rule": rule.describe(), "uncertainty_a": a.uncertainty(), "uncertainty_b": b.uncertainty()}


@dataclass
class FrameRecord:
    frame: int
    who: str  # one of WHO: the src person, the dst person, neither, or lost (no detectable face)
    score_src: float = float("nan")  # the rule's score to the src person (default: mean L2 distance)
    score_dst: float = float("nan")
    log_sigma_sq: float = float("nan")  # mean over dimensions: the face's uncertainty (with a trained PFE)


def judge(rule: SameRule, score_src: float, score_dst: float | None) -> str:
    """src, dst or neither: a face the rule accepts as both is the one it is closer to."""
    is_src, is_dst = bool(rule.same(score_src)), score_dst is not None and bool(rule.same(score_dst))
    if is_src and is_dst:
        closer_src = score_src < score_dst if rule.lower_is_same else score_src > score_dst
        return "src" if closer_src else "dst"
    return "src" if is_src else "dst" if is_dst else "neither"


def score_frames(frames: Iterable[tuple[int, np.ndarray]], model: PFEModel, source: Faces,
                 dst: Faces | None = None, finder: FaceFinder | None = None) -> tuple[list[FrameRecord], dict]:
    """Per-frame records and a summary: is each frame's face the src person, the dst person or neither
    (by ``model.rule``), and which frames have no detectable face (lost)."""
    rule, records = model.rule, []
    for index, mu, sigma_sq in embed_crops(model, _detected_crops(model, frames, finder or FaceFinder())):
        if mu is None:
            records.append(FrameRecord(index, "lost"))
            continue
        rec = FrameRecord(index, "neither", float(rule.person_scores(mu, sigma_sq, source.mu, source.sigma_sq)[0]))
        if dst is not None:
            rec.score_dst = float(rule.person_scores(mu, sigma_sq, dst.mu, dst.sigma_sq)[0])
        rec.who = judge(rule, rec.score_src, rec.score_dst if dst is not None else None)
        if model.has_uncertainty:
            rec.log_sigma_sq = float(np.log(sigma_sq).mean())
        records.append(rec)
    return records, summarise(records, rule)


def summarise(records: list[FrameRecord], rule: SameRule) -> dict:
    n = max(len(records), 1)
    out: dict = {"frames": len(records), "faces": sum(r.who != "lost" for r in records), "rule": rule.describe(),
                 "metric": rule.metric, "threshold": rule.threshold}
    for who in WHO:
        out[f"{who}_share"] = sum(r.who == who for r in records) / n
    out["lost_frames"] = [r.frame for r in records if r.who == "lost"]
    out["not_src_frames"] = [r.frame for r in records if r.who in ("dst", "neither")]
    for key in ("score_src", "score_dst", "log_sigma_sq"):
        values = np.array([getattr(r, key) for r in records], np.float64)
        values = values[np.isfinite(values)]
        if len(values):
            out[f"{key}_mean"] = float(values.mean())
            out[f"{key}_p5"], out[f"{key}_p95"] = (float(np.percentile(values, q)) for q in (5, 95))
    return out


def score_video(video: str | Path, model: PFEModel, source: Faces, dst: Faces | None = None,
                every: int = 1) -> tuple[list[FrameRecord], dict]:
    """:func:`score_frames` over every ``every``-th frame of a video."""
    check_range(every, "every", "identity", low=1)
    return score_frames(progress(sample_frames(video, every), desc="identity", unit="frame"), model, source, dst)


def records_table(records: list[FrameRecord]) -> list[dict]:
    return [asdict(r) for r in records]
