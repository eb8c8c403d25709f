"""facelab: video face swap, StarGAN attribute editing, probabilistic face embeddings and metrics.

The pipeline flows one way: extract -> faceset -> train -> model -> merge -> video. Each stage is a
sub-package; :mod:`facelab.core` holds the helpers every stage shares (configs, devices, checkpoints,
progress, logging).
"""

__version__ = "0.1.0"
