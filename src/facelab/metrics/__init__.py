"""Image-quality metrics shared by training and evaluation."""
