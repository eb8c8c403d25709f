"""Where a training step's time goes: torch.profiler's top operators of facelab's (or the reference's) step,
and cProfile's top functions of facelab's batch production, as JSON.

    python3 benchmarks/profile_step.py --trainer stargan --image-size 64 --batch-size 8
    python3 benchmarks/profile_step.py --trainer original --side reference --steps 2

Uses the cases of benchmarks/reference_loops.py (same networks, settings and real CelebA batches). The
first unit is run unprofiled (allocator and oneDNN primitive warm-up), then ``--steps`` units under
torch.profiler; the table is the ``--top`` operators by self CPU time, each with its share of the total.
Batch production (the swap/XSeg augmentation, StarGAN's JPEG decoding) is profiled separately with
cProfile because on the CPU it runs in worker processes beside the step, competing for the same cores.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from alternate import emit, machine  # noqa: E402
from reference_loops import TRAINERS, build_case, option_value  # noqa: E402


def op_table(prof, top: int) -> tuple[float, list[dict]]:
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return total / 1e6, [{"op": e.key, "self_s": round(e.self_cpu_time_total / 1e6, 3),
                          "share": round(e.self_cpu_time_total / total, 3), "calls": e.count} for e in events[:top]]


def batch_profile(make_batch, count: int, top: int) -> dict:
    make_batch(0)
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    for i in range(1, count + 1):
        make_batch(i)
    prof.disable()
    seconds = (time.perf_counter() - start) / count
    stats = pstats.Stats(prof)
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]  # by own time
    return {"seconds_per_batch": round(seconds, 4),
            "top_functions": [{"function": f"{Path(f).name}:{line}:{name}", "own_s": round(tt / count, 4),
                               "cumulative_s": round(ct / count, 4)} for (f, line, name), (_, _, tt, ct, _) in rows]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trainer", required=True, choices=TRAINERS)
    ap.add_argument("--side", choices=("facelab", "reference"), default="facelab")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--steps", type=int, default=2, help="profiled units after one unprofiled")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--batches", type=int, default=5, help="batches produced under cProfile (0: skip)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--xseg-resolution", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--set", nargs="+", default=[], type=option_value, metavar="NAME=VALUE",
                    help="a facelab swap option, e.g. channels_last=true")
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    case = build_case(args.trainer, args.precision, args, args.steps + 1)
    step = case.facelab if args.side == "facelab" else case.reference
    try:
        step(case.units[0])
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for unit in case.units[1:]:
                step(unit)
        wall = (time.perf_counter() - start) / args.steps
        total, table = op_table(prof, args.top)
        record = {"benchmark": "profile_step", "trainer": args.trainer, "side": args.side, "precision": args.precision,
                  **case.settings, "profiled_units": args.steps, "wall_s_per_unit": round(wall, 3),
                  "op_self_s_per_unit": round(total / args.steps, 3), "top_ops": table}
        if case.make_batch is not None and args.batches and args.side == "facelab":
            record["batch_production"] = batch_profile(case.make_batch, args.batches, args.top)
    finally:
        for done in case.cleanup:
            done()
    emit({**record, **machine(torch.device("cpu"))})


if __name__ == "__main__":
    main()
