"""The face enhancer: a small face super-resolution network, its training, held-out report and use."""
