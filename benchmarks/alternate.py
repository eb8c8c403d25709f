"""Two training loops timed side by side in one process, and the JSON record of the race.

Why one process and alternation: on the shared 2-core machine a run can be 2x slower than the one a
minute before it (other jobs come and go). Timing facelab's loop and a reference loop in separate runs
then measures the load, not the code. Here both loops run in the same process on the same batches and
take turns, unit by unit, in ABBA order (pair k runs facelab first when k is even, the reference first
when it is odd), so a load change hits both sides alike and neither always runs on a warm cache. The
figure is the median over pairs of the per-pair ratio reference / facelab.

Why the loss check: a speed-up bought with a different algorithm is no speed-up. Both loops start from
the same weights and see the same batches, so their losses must agree on the first unit (to float
rounding in fp32) and stay close after it; the record holds both and fails loudly when they do not.

Why a process race as well (:func:`process_race`): in one process both loops share the process's
settings, its memory allocator's among them, so what facelab sets for its whole process (the training
loop's malloc setting, core.memory) counts on both sides or on neither. Running each side as a process of
its own, alternated, measures what a user gets who runs one program or the other.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from facelab.core.device import device_name  # noqa: E402

Step = Callable[[Any], dict[str, float]]


def rel_diff(a: float, b: float, floor: float = 0.01) -> float:
    """|a - b| relative to the larger magnitude, or to ``floor`` for losses nearer 0 than that: a critic's
    score near 0 differs by rounding alone in its leading digits, which is no sign of another algorithm."""
    return abs(a - b) / max(abs(a), abs(b), floor)


def loss_gap(a: dict[str, float], b: dict[str, float]) -> tuple[float, str]:
    """The largest relative difference over the losses both dicts hold, and which loss it is."""
    return max(((rel_diff(a[k], b[k]), k) for k in a if k in b), default=(math.nan, ""))


def _run(step: Step, unit: Any, sync: Callable[[], None]) -> tuple[float, dict[str, float]]:
    sync()
    start = time.perf_counter()
    losses = step(unit)
    sync()
    return time.perf_counter() - start, losses


def race(facelab: Step, reference: Step, units: Sequence[Any], pairs: int, *, first_rtol: float,
         curve_rtol: float, first_step: Callable[[str], bool] = lambda name: True, judged_units: int | None = None,
         sync: Callable[[], None] = lambda: None) -> dict:
    """Unit 0 on both sides (the first-step loss check; also warm-up), unit 1 on both (warm-up), then
    ``pairs`` alternated, timed pairs on units 2, 3, ... (``units`` needs ``pairs + 2`` entries).

    ``first_rtol`` bounds the relative difference of unit 0's losses that ``first_step`` names (those of
    the first training step, before any update: the same weights and batch on both sides), ``curve_rtol``
    every loss after them (the weights drift apart by rounding, or by bf16 against fp32, as training goes on)
    in the first ``judged_units`` units (all when None); later units are reported, not judged.
    """
    if len(units) < pairs + 2:
        raise ValueError(f"race needs {pairs + 2} units, got {len(units)}")
    load_before = os.getloadavg()
    curve: list[tuple[dict, dict]] = []
    for unit in units[:2]:
        curve.append((facelab(unit), reference(unit)))
    times: dict[str, list[float]] = {"facelab": [], "reference": []}
    for k in range(pairs):
        unit = units[k + 2]
        order = (("facelab", facelab), ("reference", reference))
        losses = {}
        for name, step in order if k % 2 == 0 else order[::-1]:
            seconds, losses[name] = _run(step, unit, sync)
            times[name].append(seconds)
        curve.append((losses["facelab"], losses["reference"]))
    ratios = [r / f for f, r in zip(times["facelab"], times["reference"])]
    return {
        **loss_check(curve, first_rtol=first_rtol, curve_rtol=curve_rtol, first_step=first_step,
                     judged_units=judged_units),
        "seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "median_seconds": {k: round(statistics.median(v), 3) for k, v in times.items()},
        "ratios": [round(r, 3) for r in ratios],
        "speedup_median": round(statistics.median(ratios), 3),
        "load_avg_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }


def loss_check(curve: Sequence[tuple[dict, dict]], *, first_rtol: float, curve_rtol: float,
               first_step: Callable[[str], bool] = lambda name: True, judged_units: int | None = None) -> dict:
    """The record's loss fields for ``curve``, the (facelab, reference) losses of units 0, 1, ...: unit 0's
    first-step losses within ``first_rtol``, every later loss within ``curve_rtol`` (see :func:`race`)."""
    first = [{k: v for k, v in side.items() if first_step(k)} for side in curve[0]]
    first_gap, _ = loss_gap(*first)
    later = [{k: v for k, v in side.items() if not first_step(k)} for side in curve[0]]
    gaps = [loss_gap(f, r) for f, r in ([later] if later[0] else []) + list(curve[1:])]
    curve_gap, worst = max(gaps[:judged_units] if judged_units else gaps)
    return {
        "first_step_losses": {k: {"facelab": round(v, 6), "reference": round(first[1][k], 6)}
                              for k, v in first[0].items() if k in first[1]},
        "first_step_max_rel_diff": float(f"{first_gap:.3g}"),
        "curve_max_rel_diff": float(f"{curve_gap:.3g}"), "curve_judged_units": judged_units or len(gaps),
        "curve_rel_diff_per_unit": [float(f"{g:.3g}") for g, _ in gaps], "curve_worst_loss": worst,
        "losses_match": bool(first_gap <= first_rtol and curve_gap <= curve_rtol),
        "tolerances": {"first": first_rtol, "curve": curve_rtol},
    }


def run_side(step: Step, units: Sequence[Any], checked: int, sync: Callable[[], None] = lambda: None) -> dict:
    """One side of a process race, in its own process: every unit in turn; the first ``checked`` units'
    losses are returned for the loss check (and warm the side up), the later ones' times are the timing."""
    losses, seconds = [], []
    for i, unit in enumerate(units):
        took, out = _run(step, unit, sync)
        if i < checked:
            losses.append(out)
        else:
            seconds.append(took)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"losses": losses, "seconds": [round(t, 3) for t in seconds], "system_s": round(usage.ru_stime, 2),
            "user_s": round(usage.ru_utime, 2), "max_rss_mb": round(usage.ru_maxrss / 1024)}


def process_race(command: Callable[[str], list[str]], pairs: int) -> dict:
    """Each side as a whole process of its own, as a user runs it (its memory allocator and its process
    settings included), alternated ABBA over ``pairs`` pairs of processes. ``command(side)`` is the argv of
    one process; it prints :func:`run_side`'s JSON as its last line, with the race's ``settings`` and its
    ``check`` rules (``first_step``: the names of unit 0's first-step losses, ``first_rtol``, ``curve_rtol``,
    ``judged_units``) added, so the parent never builds the networks itself. Per pair, the ratio of the two
    processes' median unit times; the loss check is :func:`loss_check` on the first process of each side
    (every process of a side starts from the same weights and batches, so all of them must agree too); the
    settings and rules are the first facelab process's."""
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {"facelab": [], "reference": []}
    for k in range(pairs):
        for side in ("facelab", "reference") if k % 2 == 0 else ("reference", "facelab"):
            proc = subprocess.run(command(side), capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"the {side} process failed:\n{proc.stderr[-3000:]}")
            runs[side].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    medians = {side: [statistics.median(r["seconds"]) for r in rs] for side, rs in runs.items()}
    ratios = [r / f for f, r in zip(medians["facelab"], medians["reference"])]
    curve = list(zip(runs["facelab"][0]["losses"], runs["reference"][0]["losses"]))
    repeatable = all(r["losses"][0] == rs[0]["losses"][0] for rs in runs.values() for r in rs)
    rules = runs["facelab"][0]["check"]
    return {
        "settings": runs["facelab"][0]["settings"],
        **loss_check(curve, first_rtol=rules["first_rtol"], curve_rtol=rules["curve_rtol"],
                     first_step=set(rules["first_step"]).__contains__, judged_units=rules["judged_units"]),
        "first_step_same_in_every_process": repeatable,
        "seconds": {side: [r["seconds"] for r in rs] for side, rs in runs.items()},
        "median_seconds": {side: round(statistics.median(m), 3) for side, m in medians.items()},
        "process_usage": {side: [{k: r[k] for k in ("system_s", "user_s", "max_rss_mb")} for r in rs]
                          for side, rs in runs.items()},
        "ratios": [round(r, 3) for r in ratios],
        "speedup_median": round(statistics.median(ratios), 3),
        "load_avg_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }


def commit() -> str:
    """The code measured: the checkout's commit, marked ``+changes`` when the tree differs from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+changes" if dirty else "")


def machine(device: torch.device) -> dict:
    """What every record says about where it ran: the CPU or GPU, torch's threads and version, the code."""
    return {"device": str(device), "device_name": device_name(device), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "commit": commit(), "date": time.strftime("%Y-%m-%d %H:%M")}


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)
