"""The shared helpers: typed configs, checkpoints, metrics logs, devices."""

from __future__ import annotations

import argparse
import copy
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from facelab.core.checkpoint import load_checkpoint, save_checkpoint
from facelab.core.config import (add_config_arguments, check_fixed_unchanged, config_from_args, load_config, option,
                                 save_config)
from facelab.core.device import autocast, cpu_description, resolve_device
from facelab.core.errors import FacelabError
from facelab.core.files import previous_path
from facelab.core.logs import MetricsLog
from facelab.core.tbevents import crc32c, read_scalars


@dataclass
class _Cfg:
    resolution: int = option(128, "side", fixed=True)
    mode: str = option("a", "mode", choices=("a", "b"))
    flip: bool = option(True, "flip")
    names: list[str] = option(["x", "y"], "names")
    rate: float | None = option(None, "rate")


def _parse(cli: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--config")
    add_config_arguments(p, _Cfg)
    return p.parse_args(cli)


def test_config_layers_defaults_file_and_flags(tmp_path):
    (tmp_path / "c.yaml").write_text("resolution: 96\nmode: b\n")
    cfg = config_from_args(_Cfg, _parse(["--config", str(tmp_path / "c.yaml"), "--no-flip", "--names", "p", "q",
                                         "--rate", "0.5"]))
    assert (cfg.resolution, cfg.mode, cfg.flip, cfg.names, cfg.rate) == (96, "b", False, ["p", "q"], 0.5)
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(_Cfg, tmp_path / "saved.yaml") == cfg


def test_config_refuses_bad_values_and_fixed_changes(tmp_path):
    with pytest.raises(FacelabError, match="mode='z'"):
        config_from_args(_Cfg, _parse(["--mode", "z"]))
    with pytest.raises(FacelabError, match="resolution"):
        config_from_args(_Cfg, _parse(["--resolution", "big"]))
    (tmp_path / "bad.yaml").write_text("resolutoin: 64\n")
    with pytest.raises(FacelabError, match="resolutoin"):
        load_config(_Cfg, tmp_path / "bad.yaml")
    with pytest.raises(FacelabError, match="resolution=128"):
        check_fixed_unchanged(_Cfg(), _Cfg(resolution=64), "model")
    check_fixed_unchanged(_Cfg(), _Cfg(mode="b"), "model")  # non-fixed options may change


def test_old_option_names_still_work_for_one_release_with_a_note(tmp_path, capsys):
    """One vocabulary across commands (iterations are target_iter, the run folder model_dir, ...): the
    old StarGAN / PFE spellings keep working as flags, in YAML files and in saved model configs."""
    from facelab.pfe.config import PFEConfig
    from facelab.stargan.config import StarGANConfig

    p = argparse.ArgumentParser()
    add_config_arguments(p, StarGANConfig)
    cfg = config_from_args(StarGANConfig, p.parse_args(["--num-iters", "7", "--output-dir", "run", "--log-every", "3"]))
    assert (cfg.target_iter, cfg.model_dir, cfg.log_every) == (7, Path("run"), 3)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "'--num-iters' is now '--target-iter'" in err[0] and "--model-dir" in err[1]
    (tmp_path / "old.yaml").write_text("steps: 12\nsave_every: 4\n")  # a PFE config.yaml written before the rename
    assert load_config(PFEConfig, tmp_path / "old.yaml").target_iter == 12
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'steps' is now 'target_iter'" in err and "old.yaml" in err
    assert "--output-dir" not in p.format_help() and "--num-iters " not in p.format_help()  # not advertised


def test_checkpoint_round_trip_keeps_previous_and_refuses_corrupt(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, {"model": net.state_dict(), "opt": opt.state_dict(), "iter": 5, "rng": torch.get_rng_state()})
    save_checkpoint(path, {"model": net.state_dict(), "opt": opt.state_dict(), "iter": 6, "rng": torch.get_rng_state()})
    state = load_checkpoint(path)
    assert state["iter"] == 6 and load_checkpoint(previous_path(path))["iter"] == 5
    opt2 = torch.optim.Adam(net.parameters())
    opt2.load_state_dict(state["opt"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(FacelabError, match="corrupt.*model.prev.safetensors"):
        load_checkpoint(path)
    assert load_checkpoint(previous_path(path))["iter"] == 5


def test_metrics_log_writes_csv_and_readable_tensorboard_events(tmp_path):
    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    log = MetricsLog(tmp_path, "losses")
    log.write(1, {"loss": 0.5, "ssim": 0.25})
    log.write(2, {"loss": 0.25, "ssim": 0.5})
    log.close()
    assert (tmp_path / "losses.csv").read_text().splitlines() == ["step,loss,ssim", "1,0.5,0.25", "2,0.25,0.5"]
    (events,) = (tmp_path / "tb").iterdir()
    assert read_scalars(events) == [(1, "loss", 0.5), (1, "ssim", 0.25), (2, "loss", 0.25), (2, "ssim", 0.5)]


def test_every_config_takes_cuda_n_and_refuses_other_names():
    """``--device cuda:N`` picks one GPU in every command: the option's choices admit any index."""
    from facelab.extract.config import ExtractConfig
    from facelab.merge.config import MergeConfig
    from facelab.pfe.config import BackboneConfig, PFEConfig
    from facelab.stargan.config import EditConfig, StarGANConfig
    from facelab.swap.config import SwapConfig
    from facelab.xseg.config import XSegConfig

    for cls in (ExtractConfig, MergeConfig, BackboneConfig, PFEConfig, EditConfig, StarGANConfig, SwapConfig, XSegConfig):
        assert cls(device="cuda:1").device == "cuda:1"
        for bad in ("cuda:N", "cuda:", "gpu", "cuda:1x"):
            with pytest.raises(FacelabError, match="not one of: auto, cpu, cuda, cuda:N"):
                cls(device=bad)

def test_metrics_log_resumed_with_more_metrics_widens_its_header(tmp_path):
    """A run resumed by a facelab that reports more figures keeps them: the header grows, old rows stay."""
    MetricsLog(tmp_path, "eval").write(500, {"ssim_mean": 0.5})
    log = MetricsLog(tmp_path, "eval", resume_step=500)
    log.write(1000, {"ssim_mean": 0.75, "sharp_swap": 0.25})
    log.write(1500, {"ssim_mean": 1.0, "sharp_swap": 0.5})
    assert (tmp_path / "eval.csv").read_text().splitlines() == [
        "step,ssim_mean,sharp_swap", "500,0.5,", "1000,0.75,0.25", "1500,1.0,0.5"]


def test_devices_and_precision():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(FacelabError):
        resolve_device("tpu")
    with pytest.raises(FacelabError, match="cuda:7" if torch.cuda.is_available() else "no CUDA GPU"):
        resolve_device("cuda:7" if torch.cuda.device_count() <= 7 else "cuda:99")
    with autocast(torch.device("cpu"), "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(FacelabError, match="fp16"):
        autocast(torch.device("cpu"), "fp16")


def test_a_benchmark_record_names_the_cpu_s_bf16_units():
    """AMX hosts run bf16 several times faster than AVX512-BF16-only ones, so records must tell them apart;
    the flag names are matched whole (``avx512_bf16`` is not read out of ``avx512_bf16x``)."""
    amx = "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n"
    assert cpu_description(amx, "x86_64", 2) == "Intel(R) Xeon(R) Processor, 2 cores, AVX512-BF16, AMX-BF16"
    avx2 = "model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16x\n"
    assert cpu_description(avx2, "x86_64", 2) == "AMD EPYC, 2 cores"
    assert cpu_description("", "aarch64", 8) == "aarch64, 8 cores"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_waits_for_the_step_in_hand(sig):
    """Ctrl-C (or kill) during a training step lets the step and its bookkeeping finish, then stops."""
    from facelab.core.training import finish_step_first

    before = signal.getsignal(sig)
    done = []
    with pytest.raises(KeyboardInterrupt):
        with finish_step_first():
            os.kill(os.getpid(), sig)
            time.sleep(0.05)  # the signal is delivered here, mid-step
            done.append("rest of the step")
    assert done == ["rest of the step"] and signal.getsignal(sig) is before
    with finish_step_first():  # no signal: no interrupt
        done.append("next step")
    assert done[-1] == "next step"


def test_progress_prints_plain_lines_with_rate_and_eta_when_stderr_is_no_terminal(monkeypatch, capsys):
    import time

    from facelab.core import progress as progress_module

    monkeypatch.setattr(progress_module, "PLAIN_EVERY_S", 0.2)
    for _ in progress_module.progress(range(3), desc="quick", unit="frame"):
        pass
    assert capsys.readouterr().err == ""  # a short job says nothing
    for _ in progress_module.progress(range(12), desc="extract", unit="frame"):
        time.sleep(0.05)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 2 and "\r" not in "".join(lines)
    assert all(line.startswith("extract:") for line in lines)
    assert "frame/s" in lines[0] and "<" in lines[0]  # rate and ETA
    assert "12/12" in lines[-1]


def test_train_help_lists_the_options_by_topic():
    from facelab.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    text = sub.choices["train"].format_help()
    text = text[text.index("options:"):]  # past the usage lines
    topics = ["network (fixed once the model exists):", "training:", "augmentation:", "optimiser:", "runtime:"]
    at = [text.index(t) for t in topics]
    assert at == sorted(at) and text.index("--archi") < at[1] < text.index("--random-warp") < text.index("--workers")


def test_a_batch_worker_is_quiet_when_the_trainer_leaves_mid_handover():
    """A batch worker's resource-sharer thread loses its connection when the trainer stops mid-handover (CI
    saw an EOFError traceback after `kill`). Reproduced here for real: connections to the worker's sharer
    that hang up before the handshake. Without the worker's hook Python prints the tracebacks; with it, none."""
    import subprocess
    import sys

    script = """
import socket, sys, time
from multiprocessing import resource_sharer
if sys.argv[1] == "worker":
    from facelab.core import batches
    batches._worker_init(0)
sharer = resource_sharer._resource_sharer
with sharer._lock:
    if sharer._listener is None:
        sharer._start()
for _ in range(3):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sharer._address)
    time.sleep(0.2)
    s.close()
    time.sleep(0.3)
raise ValueError("boom")  # any other error is still shown
"""

    def stderr(kind):
        return subprocess.run([sys.executable, "-c", script, kind], capture_output=True, text=True, timeout=60).stderr

    plain, worker = stderr("plain"), stderr("worker")
    assert plain.count("Traceback") == 4 and "ValueError: boom" in plain
    assert worker.count("Traceback") == 1 and "ValueError: boom" in worker


def test_png_frames_are_written_losslessly_at_every_bit_depth():
    """facelab's own PNG encoder (Up filter, libdeflate) changes the file, never the pixels:
    colour, grey, BGRA, 16-bit (OpenCV's) and one-row images read back identical; the files are PNGs
    other readers take too."""
    import io

    import cv2
    from PIL import Image

    from facelab.io.images import encode_image

    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (37, 53, 3), np.uint8)
    bgra = np.dstack([colour, colour[:, :, 1]])
    for image in (colour, colour[:, :, 0], bgra, colour[:1], np.zeros((720, 1280, 3), np.uint8),
                  colour.astype(np.uint16) * 257):
        data = encode_image(image, ".png")
        assert np.array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), image)
        if image.dtype == np.uint8:
            rgb = np.asarray(Image.open(io.BytesIO(data)))
            expected = image if image.ndim == 2 else image[..., [2, 1, 0, 3][:image.shape[2]]]
            assert np.array_equal(rgb, expected)


@pytest.mark.parametrize("capability, expected", [("AVX2", False), ("AVX512", True), ("DEFAULT", False)])
def test_networks_use_channels_last_where_it_is_faster_unless_told(monkeypatch, capability, expected):
    """The default layout follows the CPU (channels_last with AVX512, NCHW on AVX2-only hosts, where it
    trained 1.13-1.22x faster); an explicit --channels-last / --no-channels-last wins; GPUs get channels_last."""
    from facelab.core.device import memory_format
    from facelab.swap.config import SwapConfig

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    cpu = torch.device("cpu")
    assert SwapConfig().channels_last is None
    assert (memory_format(None, cpu) == torch.channels_last) is expected
    assert memory_format(True, cpu) == torch.channels_last and memory_format(False, cpu) == torch.contiguous_format
    assert memory_format(None, torch.device("cuda")) == torch.channels_last


def test_adam_is_fused_steps_as_plain_adam_and_stays_fused_after_an_old_checkpoint():
    """The trainers' Adam is PyTorch's fused kernel: the same updates as the plain one, and a state saved
    by a plain Adam (a checkpoint from before) resumes fused, its step counters where the kernel wants them."""
    from facelab.core.optim import adam, load_optimizer_state

    torch.manual_seed(0)
    plain_params = [torch.nn.Parameter(torch.randn(64, 32)), torch.nn.Parameter(torch.randn(32))]
    fused_params = [torch.nn.Parameter(p.detach().clone()) for p in plain_params]
    plain = torch.optim.Adam(plain_params, 1e-3, (0.5, 0.999))
    fused = adam(fused_params, 1e-3, (0.5, 0.999))
    assert fused.param_groups[0]["fused"] is True

    def step(opt, params, seed):
        g = torch.Generator().manual_seed(seed)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()

    for seed in range(3):
        step(plain, plain_params, seed)
        step(fused, fused_params, seed)
    for a, b in zip(plain_params, fused_params):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)

    resumed_params = [torch.nn.Parameter(p.detach().clone()) for p in plain_params]
    resumed = adam(resumed_params, 1e-3, (0.5, 0.999))
    saved = copy.deepcopy(plain.state_dict())  # as read back from a checkpoint a plain Adam wrote
    load_optimizer_state(resumed, saved)
    assert resumed.param_groups[0]["fused"] is True
    for seed in range(3, 5):
        step(plain, plain_params, seed)
        step(resumed, resumed_params, seed)
    for a, b in zip(plain_params, resumed_params):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="a glibc malloc setting")
def test_the_training_loop_keeps_freed_memory_instead_of_mapping_it_anew():
    """After ``keep_freed_memory`` a 64 MiB tensor comes from the heap, not from an mmap() that its free
    unmaps again (which made every StarGAN step fault its activations in anew). Checked in a fresh
    process by glibc's own count of mmapped blocks, before and after."""
    import subprocess
    import sys

    probe = """
import ctypes, torch
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6"); libc.mallinfo2.restype = Info
def mapped_while_held():
    t = torch.ones(16 << 20)  # 64 MiB
    return libc.mallinfo2().hblkhd >= t.numel() * 4
before = mapped_while_held()
from facelab.core.memory import keep_freed_memory
assert keep_freed_memory() and keep_freed_memory()  # once per process, idempotent
print(before, mapped_while_held())
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "False"]


def test_stopping_the_batch_workers_survives_a_worker_that_died_on_its_way_out():
    """A worker killed by a signal as the trainer stops makes torch's SIGCHLD handler raise inside the
    workers' shutdown; the trainer has saved by then, so that ends quietly, and a stream without worker
    processes has nothing to stop."""
    from facelab.core.batches import stop_workers

    calls = []

    class DiedOnTheWayOut:
        def _shutdown_workers(self):
            calls.append(1)
            raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Aborted.")

    stop_workers(DiedOnTheWayOut())
    stop_workers(iter([1, 2]))
    assert calls == [1]
