"""Guards every training loop shares, so a failed step always ends in the same one-line advice."""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from facelab.core.errors import FacelabError


def check_finite_loss(loss: float, iteration: int, saved_iteration: int | None, model_dir: Path,
                      advice: str = "lower --lr") -> None:
    """Stop before a NaN/inf step can reach a save: the weights on disk stay the last good ones."""
    if math.isfinite(loss):
        return
    last = f"iteration {saved_iteration}" if saved_iteration is not None else "none yet"
    raise FacelabError(f"loss became {loss} at iteration {iteration}; stopped without saving, "
                       f"the last good save ({last}) in {model_dir} is kept; {advice}")


@contextmanager
def out_of_memory_as_error(batch_size: int, device: torch.device) -> Iterator[None]:
    """Turn running out of memory into a suggestion of a smaller batch (CUDA raises OutOfMemoryError,
    the CPU allocator a RuntimeError "can't allocate memory")."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not isinstance(exc, torch.OutOfMemoryError) and "allocate" not in str(exc):
            raise
        raise FacelabError(f"out of memory at batch size {batch_size} on {device}; "
                           f"try --batch-size {max(1, batch_size // 2)}") from None
