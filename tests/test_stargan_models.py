"""StarGAN networks, losses and schedules: shapes, a hand-computed gradient penalty, label rules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facelab.stargan.config import StarGANConfig
from facelab.stargan.data import target_labels
from facelab.stargan.losses import classification_loss, cycle_loss, gradient_penalty
from facelab.stargan.models import Discriminator, Generator, ResidualBlock
from facelab.stargan.train import learning_rate


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def test_generator_shapes_and_range():
    g = Generator(conv_dim=8, c_dim=5, repeat_num=2)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    out = g(x, torch.tensor([[1.0, 0, 0, 1, 0]] * 3))
    assert out.shape == (3, 3, 32, 32)
    assert out.abs().max() <= 1.0
    assert g.main[0].in_channels == 3 + 5  # label channels are concatenated to the image


def test_generator_default_layout():
    g = Generator()  # conv_dim 64, 6 residual blocks
    assert sum(isinstance(m, ResidualBlock) for m in g.main) == 6
    convs = [m for m in g.main if isinstance(m, nn.Conv2d)]
    assert (convs[0].kernel_size, convs[0].out_channels) == ((7, 7), 64)
    assert (convs[-1].kernel_size, convs[-1].out_channels) == ((7, 7), 3)
    assert [m.stride for m in convs[1:3]] == [(2, 2), (2, 2)]
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in g.main) == 2
    assert isinstance(g.main[-1], nn.Tanh)


def test_generator_uses_the_label():
    g = Generator(conv_dim=8, c_dim=3, repeat_num=1)
    x = torch.rand(1, 3, 16, 16)
    assert not torch.allclose(g(x, torch.tensor([[1.0, 0, 0]])), g(x, torch.tensor([[0.0, 1, 0]])))


@pytest.mark.parametrize("channels_last", [True, False, None])
def test_generator_gives_the_same_nchw_image_in_either_layout(channels_last):
    """The layout is a speed choice only: the same weights give the same image, returned as NCHW."""
    torch.manual_seed(0)
    nchw = Generator(conv_dim=8, c_dim=3, repeat_num=1, channels_last=False)
    other = Generator(conv_dim=8, c_dim=3, repeat_num=1, channels_last=channels_last)
    other.load_state_dict(nchw.state_dict())
    x, c = torch.rand(2, 3, 16, 16), torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    out = other(x, c)
    assert out.is_contiguous()
    torch.testing.assert_close(out, nchw(x, c), rtol=1e-5, atol=1e-5)


def test_residual_block_shape():
    assert ResidualBlock(16)(torch.rand(2, 16, 8, 8)).shape == (2, 16, 8, 8)


@pytest.mark.parametrize("image_size, repeat", [(128, 6), (64, 4)])
def test_discriminator_shapes(image_size, repeat):
    d = Discriminator(image_size=image_size, conv_dim=4, c_dim=5, repeat_num=repeat)
    src, cls = d(torch.rand(2, 3, image_size, image_size))
    side = image_size // 2**repeat
    assert src.shape == (2, 1, side, side)
    assert cls.shape == (2, 5)
    assert isinstance(d.main[1], nn.LeakyReLU) and d.main[1].negative_slope == 0.01
    assert sum(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in d.main) == repeat


def test_discriminator_refuses_bad_size():
    with pytest.raises(ValueError, match="divisible"):
        Discriminator(image_size=100, repeat_num=6)


class LinearCritic(nn.Module):
    """D(x) = <w, x>: its input gradient is w everywhere, so the penalty is (||w|| - 1)^2 by hand."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1, keepdim=True), None


class SquareCritic(nn.Module):
    """D(x) = sum(x^2): gradient 2 * x_hat, so the penalty depends on alpha."""

    def forward(self, x):
        return (x**2).flatten(1).sum(1), None


def test_gradient_penalty_linear_critic_by_hand():
    w = torch.tensor([[[[3.0, 4.0]]]])  # ||w|| = 5 -> (5 - 1)^2 = 16 for every sample
    d = LinearCritic(w.clone())
    real, fake = torch.rand(2, 1, 1, 2), torch.rand(2, 1, 1, 2)
    gp = gradient_penalty(d, real, fake, torch.rand(2, 1, 1, 1))
    assert gp.item() == pytest.approx(16.0)
    # create_graph: the penalty trains the critic; d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w|| = 1.6 w
    gp.backward()
    assert torch.allclose(d.w.grad, 1.6 * w)


def test_gradient_penalty_square_critic_by_hand():
    real = torch.tensor([[[[1.0, 2.0]]], [[[0.0, 0.0]]]])
    fake = torch.tensor([[[[0.0, 0.0]]], [[[1.0, 1.0]]]])
    alpha = torch.tensor([0.5, 0.25]).view(2, 1, 1, 1)
    # x_hat = (0.5, 1.0) and (0.75, 0.75); gradients (1, 2) and (1.5, 1.5)
    norms = [math.sqrt(1 + 4), math.sqrt(1.5**2 * 2)]
    expected = sum((n - 1) ** 2 for n in norms) / 2
    assert gradient_penalty(SquareCritic(), real, fake, alpha).item() == pytest.approx(expected, rel=1e-6)
    # the fp16 loss-scale path gives the same value
    assert gradient_penalty(SquareCritic(), real, fake, alpha, scale=1024.0).item() == pytest.approx(expected, rel=1e-6)


def test_classification_and_cycle_losses():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    by_hand = -(F.logsigmoid(logits) * target + F.logsigmoid(-logits) * (1 - target)).sum() / 2
    assert classification_loss(logits, target).item() == pytest.approx(by_hand.item())
    assert cycle_loss(torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5)).item() == pytest.approx(0.5)


def test_target_labels_hair_is_exclusive_and_others_flip():
    attrs = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]
    org = torch.tensor([[1.0, 0, 0, 1, 0], [0, 0, 1, 0, 1]])
    targets = target_labels(org, attrs)
    assert len(targets) == 5
    assert targets[1].tolist() == [[0, 1, 0, 1, 0], [0, 1, 0, 0, 1]]  # Blond: other hair colours cleared
    assert targets[3].tolist() == [[1, 0, 0, 0, 0], [0, 0, 1, 1, 1]]  # Male flipped
    assert targets[4].tolist() == [[1, 0, 0, 1, 1], [0, 0, 1, 0, 0]]  # Young flipped
    assert org.tolist() == [[1, 0, 0, 1, 0], [0, 0, 1, 0, 1]]  # input untouched


def test_learning_rate_decays_linearly_over_the_last_iterations():
    cfg = StarGANConfig()  # 200000 iterations, decay over the last 100000, updated every 1000
    assert learning_rate(1e-4, 0, cfg) == 1e-4
    assert learning_rate(1e-4, 100000, cfg) == 1e-4
    assert learning_rate(1e-4, 100999, cfg) == 1e-4  # not recomputed until the next update step
    assert learning_rate(1e-4, 101000, cfg) == pytest.approx(0.99e-4)
    assert learning_rate(1e-4, 150500, cfg) == pytest.approx(0.5e-4)
    assert learning_rate(1e-4, 199999, cfg) == pytest.approx(0.01e-4)


def test_under_cpu_bf16_autocast_the_critic_s_smallest_maps_run_in_fp32():
    """Its last layers' large weights would be cast to bf16 on every call for maps of 2x2 and 1x1 pixels;
    they run in fp32 instead, the rest in bf16, and the scores stay those of the fp32 critic."""
    torch.manual_seed(0)
    d = Discriminator(image_size=64, conv_dim=4, c_dim=5, repeat_num=6)
    out_dtypes: dict[int, torch.dtype] = {}
    for i, layer in enumerate(d.main):
        if isinstance(layer, nn.Conv2d):
            layer.register_forward_hook(lambda m, args, out, i=i: out_dtypes.__setitem__(i, out.dtype))
    x = torch.randn(3, 3, 64, 64)
    src32, cls32 = d(x)
    assert set(out_dtypes.values()) == {torch.float32}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        src, cls = d(x)
    # output maps 32, 16, 8, 4 in bf16; 2 and 1 in fp32, as are both heads
    assert [out_dtypes[i] for i in sorted(out_dtypes)] == [torch.bfloat16] * 4 + [torch.float32] * 2
    assert src.dtype == cls.dtype == torch.float32
    assert torch.allclose(src, src32, rtol=0.05, atol=0.05 * src32.abs().max().item())
    assert torch.allclose(cls, cls32, rtol=0.05, atol=0.05 * cls32.abs().max().item())
    assert Discriminator(image_size=128, conv_dim=4, repeat_num=6).fp32_from == 10  # only the 2x2 map
