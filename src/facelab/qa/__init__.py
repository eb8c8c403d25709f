"""Checks of a result, above the stages that make it: does a swapped video carry the source identity
(:mod:`facelab.qa.identity`), judged with PFE's embeddings and the calibrated same-person rule."""
