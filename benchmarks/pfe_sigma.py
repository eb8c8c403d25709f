"""Mean log sigma^2 of real photos, sharp and at fixed blur / size levels (held-out degradations).

The photos are the two bundled portraits and, with ``--fetched``, Obama's three photos and Biden's one
(facelab.samples.photos). Train the PFE with those people held out to see them as unseen people
(docs/pfe.md). Prints one JSON line per photo, then one summary line: ``ordered`` is true when every
degraded version has a larger sigma^2 than the sharp photo and the stronger level beats the weaker one.

Usage: OMP_NUM_THREADS=1 PYTHONPATH=src python3 benchmarks/pfe_sigma.py MODEL_DIR [--fetched]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from facelab.samples.photos import people_photos
from facelab.samples.clips import sample_photos
from facelab.pfe.augment import blur, shrink
from facelab.pfe.features import FaceFinder
from facelab.pfe.model import PFEModel

BLURS, SIZES = (0.035, 0.065), (20, 13)
LEVELS = ["sharp", *(f"blur{b}" for b in BLURS), *(f"{s}px" for s in SIZES)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--fetched", action="store_true", help="also Obama and Biden from the fetched photos")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, finder = PFEModel.load(args.model_dir, "cpu"), FaceFinder()
    people = {name: [photo] for name, photo in sample_photos().items()}
    if args.fetched:
        fetched = people_photos()
        people.update(obama=fetched["obama"], biden=fetched["biden"])
    ordered = True
    for name, photos in people.items():
        for k, photo in enumerate(photos):
            lms = finder.find(photo)
            variants = [(photo, lms)] + [blur(photo, lms, b) for b in BLURS] + [shrink(photo, lms, s) for s in SIZES]
            _, sigma_sq = model.embed_crops(np.stack([model.backbone.prepare(i, l) for i, l in variants]))
            level = np.log(sigma_sq).mean(1)
            ordered &= bool((level[1:] > level[0]).all() and level[2] > level[1] and level[4] > level[3])
            print(json.dumps({"person": name, "photo": k, **{n: round(float(v), 3) for n, v in zip(LEVELS, level)}}))
    print(json.dumps({"model": args.model_dir, "ordered": ordered}))


if __name__ == "__main__":
    main()
