"""Provenance of synthetic media: a signed C2PA manifest and an invisible mark in every output.

Since August 2026 the EU AI Act (Art. 50) asks that AI-generated or manipulated images and video are
marked as such in a machine-readable way. :mod:`.signing` writes the manifests, :mod:`.watermark` the
pixel mark, :mod:`.marking` applies both to what a command writes, :mod:`.verify` checks files.
"""
