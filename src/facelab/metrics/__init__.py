"""Metrics shared by training and evaluation: SSIM (reconstruction), FID (generation), mask IoU (segmentation)
and their feature extractors."""
