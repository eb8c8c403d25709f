"""Helpers shared by every pipeline stage: errors, typed configs, devices, files, checkpoints, logs."""
