"""The one GPU check: the CUDA tests and the speed figures that need a GPU, as one JSON document.

    python3 benchmarks/gpu_check.py [-o gpu_check.json] [--budget-s 570]

In under 10 minutes on one GPU it runs, each part with its own share of the time (a part that runs out
is recorded as such and the rest still runs):

1. ``pytest -m gpu``: the CUDA tests (every trainer's fp32/bf16/fp16 steps, torchrun with NCCL, merge);
2. swap training speed, SAEHD liae-ud at 128 and 256 px in fp32, bf16 and fp16 (``train_speed.py``);
3. StarGAN seconds per 1000 iterations at the reference settings in fp32 and bf16 (``stargan_speed.py``;
   the reference port took 250 s on a V100);
4. merge frames/s on 720p frames with the 128 px SAEHD model, fp32 and bf16 (``merge_speed.py``).

Without a CUDA device it prints ``{"cuda": false, ...}`` and exits 0: there is nothing to measure. Record
the figures in docs/training.md with the GPU's name (``gpu`` in the output).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"

# (name, share of the budget, command); the shares leave a margin for start-up and the JSON itself
PARTS = [
    ("cuda_tests", 0.30, [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"]),
    ("swap_train_speed", 0.25, [sys.executable, str(BENCH / "train_speed.py"), "--device", "cuda", "--steps", "20",
                                "--precision", "fp32", "bf16", "fp16", "--only", "saehd-liae-ud-128",
                                "saehd-liae-ud-256"]),
    ("stargan_speed", 0.20, [sys.executable, str(BENCH / "stargan_speed.py"), "--device", "cuda", "--iters", "200",
                             "--warmup", "10", "--precision", "fp32", "bf16"]),
    ("merge_speed", 0.20, [sys.executable, str(BENCH / "merge_speed.py"), "--device", "cuda", "--frames", "100",
                           "--repeat", "1", "--format", "jpg", "--workers", "0", "--precision", "fp32", "bf16"]),
]


def _records(stdout: str) -> list:
    """The JSON a benchmark printed: one indented document, or one record per line."""
    try:
        return [json.loads(stdout)]
    except json.JSONDecodeError:
        out = []
        for line in stdout.splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out


def run_part(name: str, command: list[str], limit: float) -> dict:
    start = time.monotonic()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=limit, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return {"part": name, "ok": False, "timed_out_after_s": round(limit), "records": _records(out)}
    result = {"part": name, "ok": proc.returncode == 0, "seconds": round(time.monotonic() - start, 1)}
    if name == "cuda_tests":
        result["summary"] = (proc.stdout.strip().splitlines() or [""])[-1]
        if proc.returncode:
            result["failures"] = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    else:
        result["records"] = _records(proc.stdout)
    if proc.returncode:
        result["stderr_tail"] = proc.stderr.strip().splitlines()[-5:]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, help="also write the JSON document here")
    ap.add_argument("--budget-s", type=float, default=570, help="wall-clock seconds for all parts together")
    args = ap.parse_args()
    report: dict = {"benchmark": "gpu_check", "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if not torch.cuda.is_available():
        report["reason"] = "no CUDA device is visible to torch: nothing was measured"
    else:
        report.update(gpu=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(), cuda_version=torch.version.cuda,
                      parts=[run_part(name, command, share * args.budget_s) for name, share, command in PARTS])
        report["all_ok"] = all(part["ok"] for part in report["parts"])
    text = json.dumps(report, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
