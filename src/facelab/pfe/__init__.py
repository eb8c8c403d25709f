"""Probabilistic Face Embeddings (Shi & Jain, ICCV 2019): each face is a Gaussian N(mu, sigma^2) in embedding space.

A frozen deterministic backbone gives mu; a small uncertainty module learns log sigma^2 from the backbone's
last features with the mutual likelihood score (MLS) loss. Used for face verification and for scoring
whether a swapped face carries the source identity (:mod:`facelab.qa.identity`).
"""
