"""What every synthesising command does to its outputs: the invisible mark in the pixels facelab made
and a signed C2PA manifest in the file (EU AI Act Art. 50: AI-generated or manipulated media are
marked as such in a machine-readable way).

In a merged frame the mark goes only on the pasted face, so the rest of the frame stays exactly as it
was (the video's 32 read frames fold enough of it together); StarGAN translations and edited photos
are marked whole (the edited region of a textured photo alone reads too weakly: confidence 4.0 where
6.5 is needed, on the astronaut portrait). The manifest covers the whole file. ``--no-provenance`` turns both off with a one-line warning.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facelab.provenance.signing import Credentials, Signer, file_sha256, identity
from facelab.provenance.watermark import embed

NO_PROVENANCE_WARNING = ("facelab: warning: --no-provenance: these outputs carry no content credentials and no "
                         "watermark; media that AI made or changed must be marked as such (EU AI Act Art. 50)")
EMBEDDED_NOTE = "each carries facelab's invisible mark and a signed C2PA manifest (check with `facelab verify FILE`)"


def warn_if_off(enabled: bool) -> None:
    if not enabled:
        print(NO_PROVENANCE_WARNING, file=sys.stderr)


def model_sha256(path: str | Path | None) -> str:
    """The SHA-256 of the weights file a manifest names ("" where there is none)."""
    return file_sha256(path) if path and Path(path).is_file() else ""


@dataclass
class Stamp:
    """Marks and signs one command's outputs; build it in each process that writes (worker processes
    make their own, the C2PA signer does not cross process boundaries)."""

    credentials: Credentials
    _signer: Signer | None = field(default=None, init=False, repr=False)
    _mark_id: int | None = field(default=None, init=False, repr=False)

    @property
    def mark_id(self) -> int:
        if self._mark_id is None:
            self._mark_id = identity().mark_id
        return self._mark_id

    def mark(self, image: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        """``image`` with the mark added, inside ``where`` (a 0..255 or boolean mask of the synthetic
        pixels, soft edges blended) or everywhere when it is None."""
        marked = embed(image, self.mark_id)
        if where is None:
            return marked
        weight = where.astype(np.float32) / (255.0 if where.dtype == np.uint8 else 1.0)
        if image.ndim == 3:
            weight = weight[..., None]
        return np.rint(image + (marked.astype(np.float32) - image) * weight).astype(np.uint8)

    def sign(self, path: str | Path) -> None:
        if self._signer is None:
            self._signer = Signer(self.credentials)
        self._signer.sign(path)
