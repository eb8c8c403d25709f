"""Frames per second of `facelab merge` on 720p frames with a 128 px SAEHD model, as JSON.

Usage: python benchmarks/merge_speed.py [--frames N] [--workers 1 2 ...] [--format png jpg] [--device cpu] [--repeat R]
                                      [--threads 1 2] [--mask-mode hull segmenter-prd ...]
                                      [--model saehd|cpu-default|quick96|identity]
The dst frames and their faces come from the first 720p clip in ../shared/data/videos, else from the
rendered 720p sample clip (facelab.samples.clips); they are prepared once in a cache folder. The model has
untrained weights (speed does not depend on them): by default the SAEHD network at 128 px with DeepFaceLab's
dims (what `facelab swap` trains on a GPU), ``--model cpu-default`` the 64 px one it trains on a CPU.
Each measurement merges every frame into a fresh folder (model, compositing and file writes included;
process start-up of the worker pool included too, so short runs understate steady-state speed).
Each setting is measured ``--repeat`` times and reported by its median, with the slowest and fastest run:
on a shared 2-core VM one run can be 15 % off the next. ``--threads 1 2`` compares in-process compositing
with one thread against one per core (the default), interleaved run by run so drift hits both alike.
``--mask-mode`` measures other masks; the ``segmenter-prd`` modes get an untrained XSeg net at the default
``facelab xseg train`` settings (256 px, 32 base channels): its speed, too, does not depend on the weights.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from clips import find_720p_clip  # noqa: E402
from facelab.core.device import device_name, resolve_device  # noqa: E402
from facelab.extract.config import ExtractConfig  # noqa: E402
from facelab.extract.pipeline import extract  # noqa: E402
from facelab.io.frames import frame_name  # noqa: E402
from facelab.io.images import write_image  # noqa: E402
from facelab.io.video import iter_frames, probe  # noqa: E402
from facelab.core.checkpoint import save_checkpoint  # noqa: E402
from facelab.core.config import save_config  # noqa: E402
from facelab.xseg.network import Segmenter  # noqa: E402
from facelab.merge.config import MergeConfig  # noqa: E402
from facelab.merge.masks import MODE_MASKS, mask_inputs  # noqa: E402
from facelab.merge import merger  # noqa: E402
from facelab.merge.merger import run_merge  # noqa: E402
from facelab.swap.config import CPU_SWAP, SwapConfig, apply_preset  # noqa: E402
from facelab.swap.models import build_model  # noqa: E402
from facelab.swap.predictor import SwapPredictor  # noqa: E402
from facelab.xseg.config import XSegConfig  # noqa: E402
from facelab.xseg.model_dir import CONFIG_NAME, FORMAT, WEIGHTS_NAME  # noqa: E402


MODELS = {"saehd": lambda: apply_preset(SwapConfig(model="saehd", resolution=128, face_type="whole")),
          "cpu-default": lambda: SwapConfig(**CPU_SWAP),
          "quick96": lambda: apply_preset(SwapConfig(model="quick96"))}


def prepare(clip: Path, n: int, face_type: str) -> Path:
    """``n`` frames of ``clip`` and their extracted faces, cached between runs."""
    folder = Path(tempfile.gettempdir()) / f"facelab-bench-merge-{clip.stem}-{n}-{face_type}"
    if not (folder / "aligned" / ".done").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for index, frame in iter_frames(clip):
            if index >= n:
                break
            write_image(folder / frame_name(index, "png"), frame)
        extract(folder, folder / "aligned", ExtractConfig(face_type=face_type))
        (folder / "aligned" / ".done").touch()
    return folder


def untrained_segmenter(folder: Path) -> Path:
    """A default-sized XSeg model dir with random weights, saved as `facelab xseg train` saves one."""
    cfg = XSegConfig()
    net = Segmenter(cfg.resolution, base_channels=cfg.base_channels)
    save_checkpoint(folder / WEIGHTS_NAME, {"format": FORMAT, "iteration": 0, "model": net.state_dict()})
    save_config(cfg, folder / CONFIG_NAME)
    return folder


class IdentityPredictor:
    """A free stand-in model (returns the dst face and full masks): measures compositing alone."""

    def __init__(self, resolution: int, face_type: str):
        self.resolution, self.face_type = resolution, face_type

    def predict(self, faces, src_mask=True, dst_mask=True):
        ones = np.ones(faces.shape[:3], np.float32)
        return faces.astype(np.float32) / 255.0, ones if src_mask else None, ones if dst_mask else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clip", type=Path, default=None)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 0], help="0 = one per core (the default)")
    ap.add_argument("--format", nargs="+", default=["png", "jpg"], choices=("png", "jpg"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeat", type=int, default=3, help="runs per setting; the median is reported")
    ap.add_argument("--threads", type=int, nargs="+", default=[0],
                    help="compositing threads when compositing in-process (0 = one per core, the default)")
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16", "fp16"))
    ap.add_argument("--mask-mode", nargs="+", default=["hull"], choices=[m for m in MODE_MASKS
                                                                        if "segmenter" not in mask_inputs(m)],
                    help="merge mask modes to time (modes reading dst XSeg masks are left out: the frames have none)")
    ap.add_argument("--model", choices=tuple(MODELS) + ("identity",), default="saehd",
                    help="saehd: 128 px liae-ud at DeepFaceLab's dims; cpu-default: the 64 px network `facelab swap` "
                         "trains on a CPU; quick96: 96 px df-ud; identity: no network (compositing only)")
    args = ap.parse_args()
    clip = args.clip or find_720p_clip("hopper")
    info = probe(clip)
    cfg = MODELS.get(args.model, MODELS["saehd"])()
    device = resolve_device(args.device)
    model = build_model(cfg).to(device)
    frames = prepare(clip, args.frames, cfg.face_type)
    results = []
    cores = merger._cores
    seg_tmp = tempfile.TemporaryDirectory()
    segmenter_dir = untrained_segmenter(Path(seg_tmp.name))
    for precision in args.precision if args.model != "identity" else ["none"]:
        predictor = IdentityPredictor(cfg.resolution, cfg.face_type) if args.model == "identity" else \
            SwapPredictor(model, cfg, device, precision=precision)
        for mask_mode, fmt, workers in itertools.product(args.mask_mode, args.format, args.workers):
            merge_cfg = MergeConfig(workers=workers, output_format=fmt, device=args.device, mask_mode=mask_mode,
                                    segmenter_dir=str(segmenter_dir))
            runs: dict[int, list] = {t: [] for t in args.threads}
            for _ in range(args.repeat):
                for threads in args.threads:
                    merger._cores = (lambda n=threads: n) if threads else cores  # sizes the thread pool
                    with tempfile.TemporaryDirectory() as out:
                        runs[threads].append(run_merge(predictor, merge_cfg, frames, Path(out) / "merged",
                                                       Path(out) / "mask"))
            merger._cores = cores
            for threads, done in runs.items():
                done.sort(key=lambda r: r.fps)
                stats = done[len(done) // 2]
                results.append({"precision": precision, "mask_mode": mask_mode, "workers": workers or "auto",
                                "threads": threads or "auto", "format": fmt, "frames": stats.merged,
                                "faces": stats.faces, "seconds": round(stats.seconds, 3),
                                "frames_per_s": round(stats.fps, 2),
                                "frames_per_s_min_max": [round(done[0].fps, 2), round(done[-1].fps, 2)]})
    print(json.dumps({"benchmark": "merge_speed", "clip": str(clip), "resolution": f"{info.width}x{info.height}",
                      "model": f"{args.model} {cfg.archi} {cfg.resolution}px {cfg.face_type}" if args.model != "identity"
                      else f"identity (no network) {cfg.resolution}px {cfg.face_type}", "device": str(device),
                      "device_name": device_name(device), "torch_threads": torch.get_num_threads(),
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
