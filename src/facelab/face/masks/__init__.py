"""Face masks: the landmark hull of each face type (and learned masks from the swap models)."""
