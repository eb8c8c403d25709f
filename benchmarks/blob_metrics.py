"""Do the held-out figures tell a blob from a face? A trained swap model's outputs against real faces, as JSON.

Usage: python benchmarks/blob_metrics.py --model-dir MODEL --src SRC_FACESET --dst DST_FACESET [--every 10]

For every ``every``-th face of each faceset: whole-crop SSIM, face-only SSIM, detail (Laplacian variance
ratio to the real face) and, for the swap, HOG's find rate and the calibrated identity rule with and
without the detail gate, for the real faces, the model's reconstructions and swaps, the same network
untrained (seeded) and the real faces under a 3 px Gaussian blur. docs/training.md has the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from facelab.metrics.identity import IdentityProbe  # noqa: E402
from facelab.metrics.sharpness import sharpness_ratio  # noqa: E402
from facelab.metrics.ssim import ssim  # noqa: E402
from facelab.swap.data import load_faces  # noqa: E402
from facelab.swap.models import build_model  # noqa: E402
from facelab.swap.predictor import load_model  # noqa: E402


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--src", required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--every", type=int, default=10)
    args = ap.parse_args()
    model, cfg = load_model(args.model_dir)
    torch.manual_seed(0)
    untrained = build_model(cfg).eval()
    src, dst = (load_faces(p, cfg.resolution, cfg.face_type) for p in (args.src, args.dst))
    src, dst = (d.subset(np.arange(0, len(d.images), args.every)) for d in (src, dst))
    s, d = _tensor(src.images), _tensor(dst.images)
    sm, dm = (torch.from_numpy(x.masks).float()[:, None] for x in (src, dst))
    probe = IdentityProbe()
    people = {"src": probe.embed(src.images, src.landmarks), "dst": probe.embed(dst.images, dst.landmarks)}
    with torch.inference_mode():
        out, out0 = model(s, d), untrained(s, d)
    blur = _tensor(np.stack([cv2.GaussianBlur(f, (0, 0), 3) for f in src.images]))
    report: dict = {"model_dir": args.model_dir, "faces": {"src": len(s), "dst": len(d)}, "reconstructions": {},
                    "swaps": {}}
    for name, pred in {"real": s, "model": out.pred_src.float(), "untrained": out0.pred_src.float(),
                       "blur_3px": blur}.items():
        report["reconstructions"][name] = {
            "ssim": ssim(pred, s).item(), "ssim_face": ssim(pred, s, mask=sm).item(),
            "detail": sharpness_ratio(pred, s, sm).mean().item()}
    for name, pred in {"real_dst": d, "model": out.pred_swap.float(), "untrained": out0.pred_swap.float()}.items():
        detail = sharpness_ratio(pred, d, dm)
        faces = pred.permute(0, 2, 3, 1).clamp(0, 1).numpy()
        gated = probe.judge(faces, dst.landmarks, people, detail.numpy())
        raw = probe.judge(faces, dst.landmarks, people, np.ones(len(faces)))
        report["swaps"][name] = {"detail": detail.mean().item(), **gated,
                                 "is_src_without_detail_gate": raw["is_src"]}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
