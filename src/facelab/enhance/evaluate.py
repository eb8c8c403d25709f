"""The held-out report: PSNR and SSIM of the enhancer against bicubic enlargement, per degradation level,
and the before/after grid (low-res | bicubic | enhanced | original).

Each held-out face is degraded once per level with a generator seeded by ``(seed, level, face)``, so
every evaluation of every model sees the same inputs, and the bicubic figures are those of the very
image the network was given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from facelab.core.errors import FacelabError
from facelab.enhance.apply import load_enhancer
from facelab.enhance.data import load_faces, split_people, spread
from facelab.enhance.degrade import LEVELS, degrade
from facelab.io.images import write_image
from facelab.metrics.ssim import ssim_images

# ``faces`` (N, S, S, 3) uint8 BGR -> the restored faces, float32 in [0, 1]
EnhanceFn = Callable[[np.ndarray], np.ndarray]
COLUMNS = ("low-res", "bicubic", "enhanced", "original")


def degraded(faces: np.ndarray, level: str, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """(small faces, the same enlarged back with bicubic) of ``faces`` at ``level``."""
    k = list(LEVELS).index(level)
    pairs = [degrade(face, LEVELS[level], np.random.default_rng([seed, k, j])) for j, face in enumerate(faces)]
    return [p[0] for p in pairs], np.stack([p[1] for p in pairs])


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR in dB of two ``(N, H, W, C)`` float arrays in [0, 1]."""
    mse = ((a.astype(np.float64) - b) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(1.0 / np.maximum(mse, 1e-10))


def score(enhance: EnhanceFn, faces: np.ndarray, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Per level: per-face ``psnr``, ``ssim`` of the enhancer and ``psnr_bicubic``, ``ssim_bicubic``."""
    truth = faces.astype(np.float32) / 255
    out = {}
    for level in LEVELS:
        enlarged = degraded(faces, level, seed)[1]
        bicubic, enhanced = enlarged.astype(np.float32) / 255, enhance(enlarged)
        out[level] = {"psnr": psnr(enhanced, truth), "psnr_bicubic": psnr(bicubic, truth),
                      "ssim": ssim_images(enhanced, truth), "ssim_bicubic": ssim_images(bicubic, truth)}
    return out


def summary(scores: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Per level: the face count, mean and standard deviation of every figure (``psnr``, ``psnr_std``, ...) and
    of each face's gain over bicubic (``psnr_gain``: the spread of the faces' own differences, which the two
    spreads of the figures cannot show), and the share of faces the enhancer improves (``psnr_better``)."""
    out = {}
    for level, figures in scores.items():
        row: dict[str, float] = {"faces": len(figures["psnr"])}
        for name in ("psnr", "ssim"):
            figures = {**figures, f"{name}_gain": figures[name] - figures[f"{name}_bicubic"]}
            row[f"{name}_better"] = float((figures[f"{name}_gain"] > 0).mean())
        for name, values in figures.items():
            row[name], row[f"{name}_std"] = float(values.mean()), float(values.std())
        out[level] = row
    return out


def comparison_grid(enhance: EnhanceFn, faces: np.ndarray, seed: int, levels: tuple[str, ...] = tuple(LEVELS)) -> np.ndarray:
    """One row per face and level: the small face (enlarged with nearest neighbours, to show its pixels),
    bicubic, enhanced, original; a header names the columns and each row's first tile its level. uint8 BGR."""
    size = faces.shape[1]
    rows = []
    for level in levels:
        small, bicubic = degraded(faces, level, seed)
        enhanced = (enhance(bicubic) * 255).round().astype(np.uint8)
        for j, face in enumerate(faces):
            low = cv2.resize(small[j], (size, size), interpolation=cv2.INTER_NEAREST)
            cv2.putText(low, level, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
            rows.append(np.concatenate([low, bicubic[j], enhanced[j], face], 1))
    header = np.full((20, 4 * size, 3), 32, np.uint8)
    for c, name in enumerate(COLUMNS):
        cv2.putText(header, name, (c * size + 4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([header, *rows], 0)


def held_out_report(model_dir: str | Path, data: list[str | Path], device: str = "auto", grid: str | Path | None = None,
                    grid_faces: int = 2) -> dict:
    """The figures of ``facelab enhancer eval``: every held-out face of ``data`` (the people training held out,
    by the model's saved ``eval_people`` and ``seed``) at every level, as mean/std per level; with ``grid``
    the before/after grid of ``grid_faces`` of them is written there."""
    enhancer = load_enhancer(model_dir, device)
    cfg = enhancer.cfg
    held = split_people(data, cfg.eval_people, cfg.seed)[1]
    if not held:
        raise FacelabError(f"no held-out faces in {', '.join(map(str, data))}: {model_dir} holds out {cfg.eval_people} "
                           "people per folder and a folder of one person holds out nobody; give the folders it was "
                           "trained on")
    faces = load_faces(held, cfg.size, "load held-out faces")
    report = {"model_dir": str(model_dir), "iteration": enhancer.iteration, "data": [str(d) for d in data],
              "faces": len(faces), "size": cfg.size, "levels": summary(score(enhancer.restore, faces, cfg.seed))}
    if grid is not None:
        write_image(grid, comparison_grid(enhancer.restore, faces[spread(grid_faces, len(faces))], cfg.seed))
        report["grid"] = str(grid)
    return report
