"""Workflows that chain the stages (frames -> faces -> train -> merge -> video), configured by typed objects."""
