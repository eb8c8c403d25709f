"""Multi-process training's pieces that need no second process: each process makes exactly its rows of the
global batch, a one-process group changes nothing, the cross-process BatchNorm is BatchNorm, and the launch
options refuse what cannot work in one line. The runs of two processes under torchrun are in each trainer's
test module (``-m slow``: each starts three interpreters)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from facelab.core.batches import StepBatches, index_batches
from facelab.core.distributed import CrossProcessBatchNorm, Group, LaunchConfig, Shard, join, torchrun_command, without_flag
from facelab.core.errors import FacelabError
from facelab.pfe.data import BalancedBatchSampler
from facelab.swap.data import Augment, SwapBatches
from facelab.xseg.data import Augment as XSegAugment, LabelledFaces, XSegBatches

from conftest import random_faces

SWAP_AUGMENTS = [Augment(), Augment(random_warp=False), Augment(random_flip=True, hsv_power=0.2, uniform_yaw=True,
                                                                 blur_out_mask=True, ct_mode="sot"),
                 Augment(ct_mode="rct")]


@pytest.mark.parametrize("aug", SWAP_AUGMENTS, ids=["default", "no-warp", "flip-hsv-yaw-blur-sot", "rct"])
def test_each_process_makes_exactly_its_rows_of_the_swap_batch(aug):
    faces = random_faces(12, 32)
    whole = SwapBatches(faces, faces, 6, aug, Augment(random_flip=True), seed=4)[7]
    parts = [SwapBatches(faces, faces, 2, aug, Augment(random_flip=True), seed=4, shard=Shard(r, 3))[7] for r in range(3)]
    for name, tensor in whole.items():
        assert torch.equal(tensor, torch.cat([p[name] for p in parts])), name


@pytest.mark.parametrize("aug", [XSegAugment(), XSegAugment(random_warp=False, random_flip=False, hsv_power=0.3)])
def test_each_process_makes_exactly_its_rows_of_the_xseg_batch(aug):
    faces = random_faces(10, 32)
    data = LabelledFaces(faces.images, faces.masks)
    whole = XSegBatches(data, 4, aug, seed=2)[3]
    parts = [XSegBatches(data, 2, aug, seed=2, shard=Shard(r, 2))[3] for r in range(2)]
    for name, tensor in whole.items():
        assert torch.equal(tensor, torch.cat([p[name] for p in parts])), name


class _Numbers(Dataset):
    """Item i -> (i as an image-sized tensor, i): what the loader of a shard should read."""

    def __len__(self) -> int:
        return 23

    def __getitem__(self, i: int):
        return torch.full((2, 2), float(i)), i


def test_index_batches_load_only_the_processes_rows_and_name_the_whole_batch():
    """StarGAN and the PFE backbone read epoch-ordered batches: each process loads its rows alone, knows the
    whole batch's indices (StarGAN's target labels are drawn from all of them), and a start mid-way (a resume)
    continues the same sequence."""
    whole = index_batches(_Numbers(), StepBatches(23, 6, seed=1), slice(None), workers=0)
    shards = [index_batches(_Numbers(), StepBatches(23, 6, seed=1), Shard(r, 2).rows(3), workers=0) for r in range(2)]
    seen = []
    for _ in range(8):  # past the end of the first epoch (3 batches of 6 from 23 items)
        (images, items), indices = next(whole)
        parts = [next(s) for s in shards]
        assert all(torch.equal(p[1], indices) for p in parts)
        assert torch.equal(torch.cat([p[0][1] for p in parts]), items)
        assert torch.equal(torch.cat([p[0][0] for p in parts]), images)
        seen.append(indices.tolist())
    assert len(set(seen[0] + seen[1] + seen[2])) == 18  # one epoch draws without repeats
    (_, _), resumed = next(index_batches(_Numbers(), StepBatches(23, 6, seed=1, start=5), slice(None), workers=0))
    assert resumed.tolist() == seen[5]


def test_balanced_batches_split_into_whole_identities():
    """PFE's MLS loss averages the genuine pairs of a batch: split by rows, each process gets whole identities,
    so the processes' pairs together are the whole batch's, as many in each."""
    labels = np.repeat(np.arange(9), 5)
    idx = BalancedBatchSampler(labels, 6, 3).sample(np.random.default_rng(0))
    for r in range(3):
        rows = labels[idx[Shard(r, 3).rows(2 * 3)]]
        assert sorted(np.unique(rows, return_counts=True)[1]) == [3, 3]


def test_one_process_changes_nothing():
    group = Group(torch.device("cpu"))
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    assert group.wrap(net) is net and isinstance(net[1], nn.BatchNorm1d)
    assert group.mean({"loss": 1.5}) == {"loss": 1.5} and group.any(True) and not group.any(False)
    assert group.on_main(lambda: 7) == 7 and group.is_main and group.world == 1
    assert join("cpu").shard == Shard() and not join("cpu").distributed  # not started by torchrun


@pytest.fixture
def one_process_group(tmp_path):
    """A gloo process group of this process alone (what torchrun --nproc_per_node 1 makes)."""
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("shape", [(6, 4), (5, 4, 3, 3)])
def test_cross_process_batchnorm_is_batchnorm(one_process_group, shape):
    """The CPU stand-in for SyncBatchNorm gives BatchNorm's outputs, gradients and running statistics (over
    one process here; the two-process PFE runs check it across processes)."""
    torch.manual_seed(0)
    plain = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(4)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 1.5)
        plain.bias.uniform_(-1, 1)
    synced = CrossProcessBatchNorm.convert(nn.Sequential(type(plain)(4)))
    synced.load_state_dict({f"0.{k}": v.clone() for k, v in plain.state_dict().items()})
    assert isinstance(synced[0], CrossProcessBatchNorm)
    x = torch.randn(shape) * 3 + 1
    for _ in range(2):
        a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        (plain(a) ** 3).sum().backward()
        (synced(b) ** 3).sum().backward()
        assert torch.allclose(a.grad, b.grad, atol=1e-4)
    assert torch.allclose(plain(x), synced(x), atol=1e-5)
    assert torch.allclose(synced[0].weight.grad, plain.weight.grad, atol=1e-4)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.allclose(getattr(plain, name).float(), getattr(synced[0], name).float(), atol=1e-6), name
    plain.eval()
    synced.eval()
    assert torch.allclose(plain(x), synced(x), atol=1e-5)


def test_device_choices_under_torchrun_are_refused_in_one_line(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(FacelabError, match="--device cuda:0 picks one GPU, but torchrun started 2 processes"):
        join("cuda:0")
    if not torch.cuda.is_available():
        with pytest.raises(FacelabError, match="no CUDA GPU"):
            join("cuda")


def test_gpus_starts_torchrun_with_the_rest_of_the_command(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    argv = ["train", "--src", "a", "--gpus", "2", "--dst", "b", "--gpus=2", "--gpu", "2"]
    assert without_flag(argv, "--gpus") == ["train", "--src", "a", "--dst", "b"]
    command = torchrun_command(LaunchConfig(gpus=2), without_flag(argv, "--gpus"))
    assert command[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "facelab",
                           "train", "--src", "a", "--dst", "b"]
    with pytest.raises(FacelabError, match="--gpus 3: this machine has 2 GPU"):
        torchrun_command(LaunchConfig(gpus=3), [])
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(FacelabError, match="already runs under torchrun"):
        torchrun_command(LaunchConfig(gpus=2), [])
    with pytest.raises(FacelabError, match="out of range"):
        LaunchConfig(gpus=-1)
