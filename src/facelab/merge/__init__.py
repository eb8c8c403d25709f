"""Merge: put the swapped face back into every dst frame (DeepFaceLab's merger), and assemble the video."""
