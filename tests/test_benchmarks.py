"""The training benchmarks still run against the current API (one tiny step each; no timings asserted).

They build models and batches the way the package does, so an API change can break them silently: that
happened once (train_speed after FaceData gained landmarks). Speed is measured by hand, never here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.parametrize("args", [
    ["train_speed.py", "--steps", "1", "--only", "quick96"],
    ["stargan_speed.py", "--device", "cpu", "--iters", "1", "--warmup", "0", "--batch-size", "2", "--image-size", "64"],
])
def test_benchmark_runs_and_prints_json(args):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / args[0]), *args[1:]], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in record, record
    assert record["device_name"] and (record.get("it_per_s", 0) > 0 or record.get("seconds_per_1000_iters", 0) > 0)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="measures for minutes where there is a GPU")
def test_gpu_check_says_there_is_nothing_to_measure_without_cuda():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py")], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["cuda"] is False and "nothing was measured" in report["reason"]


@pytest.mark.slow  # about a minute: every trainer's race, tiny
def test_reference_loops_race_every_trainer_and_its_losses_match():
    """benchmarks/reference_loops.py still builds both sides of every trainer, and with the same weights and
    batch they compute the same first-step losses (the check that makes its speed-ups comparable)."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "reference_loops.py"), "--tiny", "--pairs", "1"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert {r["trainer"] for r in records} == {"original", "quick96", "saehd-df-ud-128", "xseg", "stargan", "pfe-head"}
    for r in records:
        assert r["losses_match"] and r["speedup_median"] > 0 and r["first_step_losses"], r


def test_reference_loops_races_whole_processes_with_the_same_losses():
    """``--processes``: each side in a process of its own (facelab's with its training loop's malloc
    setting); the processes start from the same weights and batches, so the loss check still holds."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "reference_loops.py"), "--tiny", "--pairs", "1",
                           "--trainer", "stargan", "--processes", "--timed-units", "1"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (record,) = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert record["losses_match"] and record["first_step_same_in_every_process"], record
    assert [len(runs) for runs in record["seconds"].values()] == [1, 1] and record["speedup_median"] > 0
    assert set(record["process_usage"]) == {"facelab", "reference"}


def test_reference_loops_race_stargan_against_itself_in_another_layout():
    """``--set`` / ``--against`` reach StarGAN's side too (the A/B of its generator's layout): the two
    sides are one algorithm, so their first-step losses agree."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "reference_loops.py"), "--tiny", "--pairs", "1",
                           "--trainer", "stargan", "--set", "channels_last=true", "--against", "channels_last=false"],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (record,) = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert record["reference_side"] == {"facelab with options": {"channels_last": False}}
    assert record["losses_match"], record


def test_the_winograd_convolutions_compute_the_direct_convolution_and_its_gradients():
    """benchmarks/conv_algorithms.py times Winograd against oneDNN only if both compute the same thing:
    outputs and both gradients of F(2x2) and F(4x4) equal conv2d's, odd sizes included (padded tiles)."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(REPO / "benchmarks"))
    from conv_algorithms import WINOGRAD, kronecker_transforms, winograd_conv3x3

    gen = torch.Generator().manual_seed(0)
    for size in (7, 12):
        x = torch.randn(2, 5, size, size, generator=gen, dtype=torch.float64, requires_grad=True)
        w = torch.randn(4, 5, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
        b = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True)
        g = torch.randn(2, 4, size, size, generator=gen, dtype=torch.float64)
        expected = F.conv2d(x, w, b, padding=1)
        want = torch.autograd.grad(expected, (x, w, b), g)
        for m in WINOGRAD:
            y = winograd_conv3x3(x, w, b, m, kronecker_transforms(m, torch.float64))
            assert y.shape == expected.shape
            torch.testing.assert_close(y, expected, rtol=1e-9, atol=1e-9)
            for got, ref in zip(torch.autograd.grad(y, (x, w, b), g), want):
                torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)
