"""Image-set metrics shared by the training pipelines (FID and its feature extractors)."""
