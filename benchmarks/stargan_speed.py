"""Seconds per 1000 StarGAN training iterations at the reference settings; prints one JSON line per precision.

    python3 benchmarks/stargan_speed.py --device cpu --iters 10            # CPU, extrapolated from 10 iterations
    python3 benchmarks/stargan_speed.py --device cuda --precision fp32 bf16 --iters 200

Reference settings: batch 16, 128 px, d_train_repeat 5, the full-size networks. Each run times whole
iterations (critic step, plus a generator step every 5th) on real faces already in device memory, so data
loading is not counted; the iteration count should be a multiple of d_train_repeat so the generator
steps are counted in proportion. Reference figures: 250 s / 1000 it on a V100 and 112 s on an Ascend 910
(TensorFlow port); the goal on one H100 is under 60 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from facelab.core.device import device_name  # noqa: E402
from facelab.core.memory import keep_freed_memory  # noqa: E402
from facelab.core.distributed import join  # noqa: E402
from facelab.stargan.config import StarGANConfig  # noqa: E402
from facelab.stargan.data import CelebADataset, read_attributes  # noqa: E402
from facelab.samples.celeba import make_sample_celeba  # noqa: E402
from facelab.stargan.train import Trainer  # noqa: E402


def real_batches(cfg: StarGANConfig, device: torch.device, count: int = 48):
    with tempfile.TemporaryDirectory() as tmp:
        root, attrs = make_sample_celeba(tmp, count=count)
        data = CelebADataset(root, read_attributes(attrs, cfg.selected_attrs), cfg.crop_size, cfg.image_size)
        items = [data[i] for i in range(len(data))]
    images = torch.stack([it[0] for it in items]).to(device)
    labels = torch.stack([it[1] for it in items])
    n = cfg.batch_size
    return [(images[i : i + n], labels[i : i + n]) for i in range(0, len(items) - n + 1, n)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(cfg: StarGANConfig, iters: int, warmup: int) -> dict:
    trainer = Trainer(cfg, join(cfg.device))
    keep_freed_memory()  # as the training loop (core.training.step_loop) sets it
    device = trainer.device
    batches = real_batches(cfg, device)
    for i in range(warmup):
        trainer.train_step(*batches[i % len(batches)])
    sync(device)
    start = time.perf_counter()
    for i in range(iters):
        trainer.train_step(*batches[i % len(batches)])
    sync(device)
    seconds = time.perf_counter() - start
    return {
        "benchmark": "stargan_train_speed", "device": str(device),
        "device_name": device_name(device),
        "precision": cfg.precision, "batch_size": cfg.batch_size, "image_size": cfg.image_size,
        "d_train_repeat": cfg.d_train_repeat, "measured_iters": iters, "warmup_iters": warmup,
        "measured_seconds": round(seconds, 3), "seconds_per_1000_iters": round(seconds / iters * 1000, 1),
        "extrapolated_to_1000": iters < 1000, "torch": torch.__version__, "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--precision", nargs="+", default=["fp32"], help="one or more of fp32 bf16 fp16")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations (use a multiple of 5)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
    for precision in args.precision:
        cfg = StarGANConfig(batch_size=args.batch_size, image_size=args.image_size, device=args.device,
                            precision=precision, seed=0)
        print(json.dumps(measure(cfg, args.iters, args.warmup)), flush=True)


if __name__ == "__main__":
    main()
