"""Face alignment: the canonical mean face, the face types' crops, similarity transforms and head pose."""
