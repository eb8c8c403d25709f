"""Colour transfer shared by training (colour augmentation) and merge (matching the swapped face to the frame)."""

from facelab.color.transfer import MODES, color_transfer, histogram_match

__all__ = ["MODES", "color_transfer", "histogram_match"]
