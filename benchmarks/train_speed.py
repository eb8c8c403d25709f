"""Training iterations/s and peak memory of the swap models, one JSON line per run.

Usage: python benchmarks/train_speed.py [--steps N] [--device cpu|cuda] [--precision fp32 bf16] [--only NAME]
Runs original@64 bs16, quick96 bs4 and saehd liae-ud@128 bs8 (DeepFaceLab's default dims; liae-ud@256 bs8 with
--only saehd-liae-ud-256) with the real training step (losses, AdaBelief, masks) on synthetic faces, each in a
fresh process so the peak resident
memory (CPU) or peak allocated CUDA memory belongs to that run alone. Batch production is timed on its own
("data_batches_per_s", one process) since on the CPU the workers run beside the model.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from facelab.core.device import device_name  # noqa: E402
from facelab.core.memory import keep_freed_memory  # noqa: E402
from facelab.swap.config import SwapConfig, apply_preset  # noqa: E402
from facelab.swap.data import FaceData  # noqa: E402

RUNS = {
    "original": dict(model="original", batch_size=16),
    "quick96": dict(model="quick96", batch_size=4),
    "saehd-liae-ud-128": dict(model="saehd", archi="liae-ud", resolution=128, batch_size=8, face_type="whole"),
    "saehd-liae-ud-256": dict(model="saehd", archi="liae-ud", resolution=256, batch_size=8, face_type="whole"),
}
DEFAULT_RUNS = ["original", "quick96", "saehd-liae-ud-128"]  # 256 px is for GPUs (benchmarks/gpu_check.py)


def synthetic_faces(n: int, res: int, seed: int = 0) -> FaceData:
    """Random images with an elliptic face mask and eye/mouth boxes: the step's cost does not depend on content."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:res, :res] / res
    mask = (((xx - 0.5) / 0.35) ** 2 + ((yy - 0.55) / 0.42) ** 2 < 1).astype(np.uint8)
    em = np.zeros_like(mask)
    em[int(res * 0.35):int(res * 0.45), int(res * 0.25):int(res * 0.75)] = 1
    em[int(res * 0.7):int(res * 0.8), int(res * 0.35):int(res * 0.65)] = 1
    images = rng.integers(0, 256, (n, res, res, 3), dtype=np.uint8)
    landmarks = np.zeros((n, 68, 2), np.float32)  # read only by the held-out evaluation, which is off here
    return FaceData(images, np.repeat(mask[None], n, 0), np.repeat(em[None], n, 0), rng.uniform(-30, 30, n).astype(np.float32),
                    landmarks)


def run_one(name: str, steps: int, device: str, precision: str, threads: int) -> dict:
    from facelab.swap.train import Trainer

    torch.set_num_threads(threads)
    cfg = apply_preset(SwapConfig(**RUNS[name], device=device, precision=precision, workers=0, eval_every=0,
                                  eval_faces=0, preview_every=10**9, log_every=10**9, save_every_minutes=10**9),
                       {"batch_size"})
    faces = synthetic_faces(64, cfg.resolution)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, faces, faces, tmp)
        keep_freed_memory()  # as the training loop (core.training.step_loop) sets it
        batches = [trainer.batches[i] for i in range(steps + 2)]
        t0 = time.perf_counter()
        for i in range(4):
            trainer.batches[100 + i]
        data_rate = 4 / (time.perf_counter() - t0)
        for b in batches[:2]:  # warm-up: allocator, autotuning
            trainer.step(b)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for b in batches[2:]:
            losses = trainer.step(b)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        trainer.close()
    peak = (torch.cuda.max_memory_allocated() if trainer.device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"run": name, "model": cfg.model, "archi": cfg.archi if cfg.model != "original" else "original",
            "resolution": cfg.resolution, "batch_size": cfg.batch_size, "device": str(trainer.device),
            "precision": precision, "threads": threads, "steps": steps, "it_per_s": round(steps / elapsed, 3),
            "faces_per_s": round(steps * cfg.batch_size / elapsed, 2), "data_batches_per_s": round(data_rate, 2),
            "peak_memory_mb": round(peak / 2**20, 1), "memory_kind": "cuda_allocated" if trainer.device.type == "cuda" else "process_rss",
            "params_m": round(sum(p.numel() for p in trainer.model.parameters()) / 1e6, 2),
            "loss": round(losses["total"], 4), "device_name": device_name(trainer.device),
            "torch": torch.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", nargs="+", default=["fp32"])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--only", choices=list(RUNS), nargs="+", default=DEFAULT_RUNS)
    ap.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.in_process:
        print(json.dumps(run_one(args.only[0], args.steps, args.device, args.precision[0], args.threads)))
        return
    for precision in args.precision:
        for name in args.only:
            cmd = [sys.executable, __file__, "--in-process", "--only", name, "--steps", str(args.steps),
                   "--device", args.device, "--precision", precision, "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout.strip() else None
            print(line or json.dumps({"run": name, "precision": precision, "error": proc.stderr.strip().splitlines()[-1:]}),
                  flush=True)


if __name__ == "__main__":
    main()
