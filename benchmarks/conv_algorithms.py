"""Winograd convolution against oneDNN's direct one, per 3x3 layer of Quick96 and SAEHD df-ud 128, as JSON.

    python3 benchmarks/conv_algorithms.py                          # both models, fp32, 8 repeats a layer
    python3 benchmarks/conv_algorithms.py --model quick96 --precision fp32 bf16

Why: the swap trainers' steps are 83-92 % convolutions (docs/performance.md), and oneDNN already runs them
at about the rate of a plain matrix product on this CPU, so no layout or scheduling change makes them much
cheaper. The one way to compute the same convolution with fewer multiplications is Winograd's minimal
filtering F(m x m, 3 x 3) (Lavin & Gray 2016; what cuDNN picks on GPUs): each m x m output tile costs
(m + 2)^2 products per channel pair instead of 9 m^2, 2.25x fewer for m = 2 and 4x for m = 4, paid for with
input, weight and output transforms. This measures whether that pays here: each distinct 3x3 stride-1
layer of the two models at its training shape, forward and backward (what a step runs), the direct
``F.conv2d`` against F(2x2, 3x3) and F(4x4, 3x3) written in PyTorch ops (the transforms as products with the
Kronecker matrices, the tile products as one batched matmul; autograd derives the backward), the three
interleaved repeat by repeat, each figure the median. ``conv_ms`` weighs each shape by how many layers have
it; ``best_per_layer_ms`` is what choosing the fastest algorithm layer by layer would give. The error is the
largest difference to a float64 convolution, relative to the output's largest value.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from alternate import emit, machine  # noqa: E402
from facelab.core.device import memory_format  # noqa: E402
from reference_loops import SWAP_RUNS  # noqa: E402

# Lavin & Gray's matrices: B^T (input), G (filter), A^T (output), for points 0, +-1 (m = 2) and 0, +-1, +-2 (m = 4)
WINOGRAD = {
    2: ([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]]),
    4: ([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0],
         [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6],
         [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
}


def kronecker_transforms(m: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The 2-D transforms as single matrices on flattened tiles: B^T x B^T, G x G, A^T x A^T."""
    bt, g, at = (torch.tensor(a, dtype=torch.float64) for a in WINOGRAD[m])
    return tuple(torch.kron(t, t).to(dtype) for t in (bt, g, at))


def winograd_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, m: int,
                     mats: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for a 3x3 kernel, by F(m x m, 3 x 3) on (m+2)^2 tiles."""
    kb, kg, ka = mats
    a = m + 2
    n, c, h, w = x.shape
    out = weight.shape[0]
    th, tw = -(-h // m), -(-w // m)
    tiles = F.pad(x, (1, tw * m - w + 1, 1, th * m - h + 1)).unfold(2, a, m).unfold(3, a, m)  # n c th tw a a
    p = n * th * tw
    v = (kb @ tiles.permute(4, 5, 0, 2, 3, 1).reshape(a * a, -1)).view(a * a, p, c)
    u = (kg @ weight.permute(2, 3, 1, 0).reshape(9, -1)).view(a * a, c, out)
    y = (ka @ torch.bmm(v, u).view(a * a, -1)).view(m, m, n, th, tw, out)
    y = y.permute(2, 3, 0, 4, 1, 5).reshape(n, th * m, tw * m, out)[:, :h, :w]
    return (y if bias is None else y + bias).permute(0, 3, 1, 2)


def conv3x3_shapes(model_name: str) -> tuple[Counter, dict]:
    """Every 3x3 stride-1 convolution the training step runs: (batch, in, size, out) -> how many layers."""
    from facelab.swap.config import SwapConfig, apply_preset
    from facelab.swap.models import build_model
    from reference_loops import plain_forward

    cfg = apply_preset(SwapConfig(**SWAP_RUNS[model_name], device="cpu"), set())
    model = build_model(cfg)
    shapes: Counter = Counter()

    def record(conv, inputs, _output):
        if conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.groups == 1:
            b, c, h, w = inputs[0].shape
            if h == w:
                shapes[(b, c, h, conv.out_channels)] += 1

    hooks = [mod.register_forward_hook(record) for mod in model.modules() if isinstance(mod, torch.nn.Conv2d)]
    x = torch.zeros(cfg.batch_size, 3, cfg.resolution, cfg.resolution)
    with torch.no_grad():
        plain_forward(model, x, x)
    for hook in hooks:
        hook.remove()
    return shapes, {"resolution": cfg.resolution, "batch_size": cfg.batch_size, "archi": cfg.archi}


def time_layer(shape: tuple[int, int, int, int], precision: str, repeats: int) -> tuple[dict, dict]:
    b, c, size, out = shape
    gen = torch.Generator().manual_seed(0)
    layout = memory_format(None, torch.device("cpu"))  # what facelab's swap models run in on this CPU
    x = torch.randn(b, c, size, size, generator=gen).contiguous(memory_format=layout).requires_grad_()
    weight = (torch.randn(out, c, 3, 3, generator=gen) / (9 * c) ** 0.5).contiguous(memory_format=layout)
    weight.requires_grad_()
    bias = torch.zeros(out, requires_grad=True)
    grad = torch.randn(b, out, size, size, generator=gen)
    exact = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    ways = {"direct": lambda: F.conv2d(x, weight, bias, padding=1)}
    for m in WINOGRAD:
        mats = kronecker_transforms(m, torch.float32)
        ways[f"winograd_f{m}"] = lambda m=m, mats=mats: winograd_conv3x3(x, weight, bias, m, mats)
    times: dict[str, list[float]] = {name: [] for name in ways}
    errors = {}
    for name, forward in ways.items():
        with torch.no_grad(), autocast:
            errors[name] = float((forward().double() - exact).abs().max() / exact.abs().max())
    for _ in range(repeats + 2):  # two warm-ups, then the timed repeats, the ways interleaved
        for name, forward in ways.items():
            start = time.perf_counter()
            with autocast:
                y = forward()
            y.backward(grad)
            times[name].append(time.perf_counter() - start)
            x.grad = weight.grad = bias.grad = None
    return {name: round(statistics.median(t[2:]) * 1e3, 2) for name, t in times.items()}, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["quick96", "saehd-df-ud-128"], choices=["quick96",
                                                                                               "saehd-df-ud-128"])
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    for model_name in args.model:
        shapes, settings = conv3x3_shapes(model_name)
        for precision in args.precision:
            layers = []
            for shape, count in sorted(shapes.items(), key=lambda kv: -kv[0][1] * kv[0][3] * kv[0][2] ** 2):
                ms, errors = time_layer(shape, precision, args.repeats)
                layers.append({"batch_in_size_out": list(shape), "layers": count, "ms_forward_backward": ms,
                               "max_rel_error": {k: float(f"{v:.1e}") for k, v in errors.items()}})
            total = {name: round(sum(layer["layers"] * layer["ms_forward_backward"][name] for layer in layers), 1)
                     for name in layers[0]["ms_forward_backward"]}
            best = round(sum(layer["layers"] * min(layer["ms_forward_backward"].values()) for layer in layers), 1)
            emit({"model": model_name, **settings, "precision": precision, **machine(torch.device("cpu")),
                  "conv3x3_layers": sum(shapes.values()), "conv_ms": total, "best_per_layer_ms": best,
                  "best_per_layer_speedup": round(total["direct"] / best, 3), "per_shape": layers})


if __name__ == "__main__":
    main()
