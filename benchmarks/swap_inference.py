"""Milliseconds per face of the swap network at inference (what merge calls), fp32 vs bf16, as JSON.

Two cases per precision: ``all_masks`` (swapped face and both learned masks, e.g. mask mode
learned-src*dst) and ``face_only`` (the default hull mask mode, where merge asks for no learned mask).

Usage: python benchmarks/swap_inference.py [--archi liae-ud] [--resolution 128] [--batch 8] [--device cpu]
Untrained weights with DeepFaceLab's default SAEHD dims; timing does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from facelab.core.device import resolve_device  # noqa: E402
from facelab.swap.config import SwapConfig, apply_preset  # noqa: E402
from facelab.swap.models import build_model  # noqa: E402
from facelab.swap.predictor import SwapPredictor  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--archi", default="liae-ud")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    args = ap.parse_args()
    device = resolve_device(args.device)
    cfg = apply_preset(SwapConfig(model="saehd", resolution=args.resolution, archi=args.archi))
    model = build_model(cfg).to(device)
    faces = np.random.default_rng(0).integers(0, 256, (args.batch, cfg.resolution, cfg.resolution, 3), dtype=np.uint8)
    results = {}
    for precision in args.precision:
        predictor = SwapPredictor(model, cfg, device, batch_size=args.batch, precision=precision)
        for case, masks in (("all_masks", True), ("face_only", False)):
            predictor.predict(faces, masks, masks)  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.repeats):
                predictor.predict(faces, masks, masks)
            ms = (time.perf_counter() - start) / args.repeats / args.batch * 1000
            results.setdefault(precision, {})[case] = round(ms, 2)
    print(json.dumps({"benchmark": "swap_inference", "model": f"saehd {cfg.archi} {cfg.resolution}px",
                      "batch": args.batch, "device": str(device), "torch_threads": torch.get_num_threads(),
                      "ms_per_face": results}, indent=2))


if __name__ == "__main__":
    main()
