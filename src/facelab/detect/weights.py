"""Loading user-supplied weight files for the torch face-stack backends (S3FD, 2D-FAN), safely.

Files are read as tensors only (``torch.load(weights_only=True)`` or safetensors), so a weight file can
never run code; every problem is one line naming the file and what was expected.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from torch import nn

from facelab.core.errors import FacelabError


def load_weights(model: nn.Module, path: str | Path, what: str) -> nn.Module:
    """Load a user's weight file into ``model`` by its original key names, or fail in one line.

    ``what`` names the network with its article (``"an S3FD"``) for the messages.

    Accepts a pickled state dict (``.pth``/``.pt``/``.pth.tar``, read with ``weights_only=True`` so a file
    cannot run code), optionally wrapped in ``{"state_dict": ...}`` or saved from ``nn.DataParallel``
    (``module.`` prefixes), and ``.safetensors``. BatchNorm ``num_batches_tracked`` counters may be
    absent: files saved before PyTorch 0.4.1 do not have them and they do not affect inference.
    """
    path = Path(path)
    expect = f"expected {what} weight file (.pth/.pt state dict or .safetensors)"
    if not path.is_file():
        raise FacelabError(f"{path}: no such file; {expect}")
    if _is_torchscript(path):
        raise FacelabError(f"{path}: a TorchScript archive, not a state dict; export one with: python -c \"import torch; "
                           f"torch.save(torch.jit.load('{path}').state_dict(), '{path.with_suffix('.pth')}')\"")
    try:
        if path.suffix == ".safetensors":
            import safetensors.torch

            state = safetensors.torch.load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged zips, pickles and headers raise many types
        raise FacelabError(f"{path}: cannot be read ({type(exc).__name__}); {expect}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FacelabError(f"{path}: not a state dict of tensors; {expect}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        problem = (f"missing key {missing[0]}" if missing else f"unexpected key {unexpected[0]}" if unexpected
                   else f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, expected {tuple(own[wrong[0]].shape)}")
        more = len(missing) + len(unexpected) + len(wrong) - 1
        raise FacelabError(f"{path}: not {what} state dict: {problem}" + (f" (and {more} more)" if more else ""))
    model.load_state_dict({**own, **state}, strict=True)
    return model


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives (face_alignment >= 1.3 ships 2D-FAN as one) hold compiled code, not just tensors."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):  # legacy pickles and damaged files: torch.load reports those
        return False
    return any(name.endswith("/constants.pkl") or "/code/" in name for name in names)
