"""Facesets: aligned face images that carry their extraction metadata inside the image file."""
