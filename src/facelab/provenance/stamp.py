"""What every synthesising command does to its outputs: the invisible mark in the pixels facelab made
and a signed C2PA manifest in the file (EU AI Act Art. 50: AI-generated or manipulated media are
marked as such in a machine-readable way).

The mark covers the whole picture of every merged frame that holds a swapped face, every StarGAN
translation and every edited photo: on the pasted face alone (5-20 % of a frame) it did not survive
even the crf 18 video (docs/provenance.md). Frames without a face are copied through untouched. The
manifest covers the whole file. ``--no-provenance`` turns both off with a one-line warning.
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
EMBEDDED_NOTE = "carry facelab's invisible mark and a signed C2PA manifest (check with `facelab verify FILE`)"


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

    def mark(self, image: np.ndarray) -> np.ndarray:
        return embed(image, identity().mark_id)  # identity() is made once per process

    @property
    def signer(self) -> Signer:
        if self._signer is None:
            self._signer = Signer(self.credentials)
        return self._signer

    def sign(self, path: str | Path) -> None:
        self.signer.sign(path)

    def signed(self, data: bytes, path: str | Path) -> bytes:
        """``data``, the file about to be written to ``path``, signed (:meth:`Signer.signed`)."""
        return self.signer.signed(data, path)
