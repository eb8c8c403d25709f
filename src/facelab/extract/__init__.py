"""Extraction: video, frame folder or photos -> detected faces -> 68 landmarks -> aligned faceset."""
