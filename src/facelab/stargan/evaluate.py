"""FID between the real test images and their translations into every domain."""

from __future__ import annotations

import numpy as np
import torch

from facelab.core.progress import progress
from facelab.metrics.fid import FeatureExtractor, fid_from_features
from facelab.stargan.data import CelebADataset, first_images, to_bgr8
from facelab.stargan.models import Generator
from facelab.stargan.translate import translate_all


def translation_fid(g: Generator, dataset: CelebADataset, extractor: FeatureExtractor, device: torch.device,
                    batch_size: int = 16, max_images: int | None = None, precision: str = "fp32") -> dict:
    """``fid``: real test images vs all their translations pooled; ``per_domain``: vs those into one domain;
    ``real_vs_real``: the even- vs the odd-numbered real images (disjoint halves of the same people), the
    value a perfect generator would approach on sets half this size, so a reader can judge the scale.

    The real images go through the same crop and resize as the generator's inputs, so the distance
    measures the translation, not a resolution difference.
    """
    attrs = dataset.table.attrs
    count, loader = first_images(dataset, max_images, batch_size)
    real, fake = [], {a: [] for a in attrs}
    with progress(total=count, desc=f"fid[{extractor.name}]", unit="img") as bar:
        for images, labels, _ in loader:
            images = images.to(device)
            real.append(extractor(to_bgr8(images)))
            for attr, out in zip(attrs, translate_all(g, images, labels, attrs, precision)):
                fake[attr].append(extractor(to_bgr8(out)))
            bar.update(len(labels))
    real_f = np.concatenate(real)
    fake_f = {a: np.concatenate(v) for a, v in fake.items()}
    return {
        "extractor": extractor.name,
        "images": count,
        f"fid[{extractor.name}]": fid_from_features(real_f, np.concatenate(list(fake_f.values()))),
        "per_domain": {a: fid_from_features(real_f, f) for a, f in fake_f.items()},
        "real_vs_real": fid_from_features(real_f[0::2], real_f[1::2]) if count >= 4 else None,
    }
