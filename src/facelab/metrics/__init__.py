"""Metrics shared by training and evaluation: SSIM (reconstruction), FID (generation) and their feature extractors."""
