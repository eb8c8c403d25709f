"""Mean log sigma^2 of the bundled portraits, sharp and at fixed blur / size levels (held-out degradations).

Usage: OMP_NUM_THREADS=1 PYTHONPATH=src python3 benchmarks/pfe_sigma.py MODEL_DIR
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from facelab.io.samples import sample_photos
from facelab.pfe.augment import blur, shrink
from facelab.pfe.features import FaceFinder
from facelab.pfe.model import PFEModel

BLURS, SIZES = (0.035, 0.065), (20, 13)


def main(model_dir: str) -> None:
    torch.set_num_threads(1)
    model, finder = PFEModel.load(model_dir, "cpu"), FaceFinder()
    print("person      sharp  " + "  ".join(f"blur{b}" for b in BLURS) + "  " + "  ".join(f"{s}px" for s in SIZES))
    for name, photo in sample_photos().items():
        lms = finder.find(photo)
        variants = [(photo, lms)] + [blur(photo, lms, b) for b in BLURS] + [shrink(photo, lms, s) for s in SIZES]
        _, sigma_sq = model.embed_crops(np.stack([model.backbone.prepare(i, l) for i, l in variants]))
        print(f"{name:10s} " + "  ".join(f"{v:6.2f}" for v in np.log(sigma_sq).mean(1)))


if __name__ == "__main__":
    main(sys.argv[1])
