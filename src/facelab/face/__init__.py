"""What every stage knows about one aligned face: its metadata (landmarks, transform, source) and its masks."""
