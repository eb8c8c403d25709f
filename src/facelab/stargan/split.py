"""The test/train split of a CelebA-layout folder.

Two ways, chosen by ``--test-split``:

* ``identities`` (the default when ``identity_CelebA.txt`` lies beside the attribute file): the first
  ``--test-identities`` people, in the order they first appear in the attribute file, are held out with
  all their images, so test images and FID are on people the generator never saw. A researcher wants
  this; a line split would put other photos of the test people in the training set.
* ``lines``: the first ``--test-count`` lines of the attribute file, as the original StarGAN (which
  shuffles them first) and the reference port do. For folders without an identity file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from facelab.core.errors import FacelabError
from facelab.stargan.config import StarGANConfig
from facelab.stargan.data import AttributeTable, CelebADataset, read_attributes

IDENTITY_FILE = "identity_CelebA.txt"


def identity_path(cfg: StarGANConfig) -> Path:
    return Path(cfg.identity_path) if cfg.identity_path else Path(cfg.attr_path).parent / IDENTITY_FILE


def read_identities(path: Path, table: AttributeTable, wanted_by: str) -> list[str]:
    """The identity of every image of ``table``, from an ``identity_CelebA.txt`` (``NAME IDENTITY`` lines)."""
    if not path.is_file():
        raise FacelabError(f"identity file {path} not found; {wanted_by} needs it: give --identity-path "
                           f"(CelebA's identity_CelebA.txt) or use --test-split lines")
    found: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise FacelabError(f"{path}:{lineno}: expected 'IMAGE_NAME IDENTITY', found {len(parts)} fields; "
                               f"fix or delete this line")
        found[parts[0]] = parts[1]
    missing = [(n, line) for n, line in zip(table.names, table.lines) if n not in found]
    if missing:
        name, line = missing[0]
        raise FacelabError(f"{path}: no identity for {name} ({table.source}:{line}; {len(missing)} image(s) "
                           f"without one); add them or use --test-split lines")
    return [found[n] for n in table.names]


def subset(table: AttributeTable, rows: np.ndarray) -> AttributeTable:
    return dataclasses.replace(table, names=[table.names[i] for i in rows], labels=table.labels[rows],
                               lines=[table.lines[i] for i in rows])


def first_people(identities: list[str], count: int) -> set[str]:
    """The first ``count`` identities in order of first appearance."""
    return set(list(dict.fromkeys(identities))[:count])


def resolved_mode(cfg: StarGANConfig) -> str:
    if cfg.test_split != "auto":
        return cfg.test_split
    return "identities" if identity_path(cfg).is_file() else "lines"


def load_split(cfg: StarGANConfig, part: str) -> AttributeTable:
    """The ``part`` ("test" or "train") of the attribute file under ``cfg``'s split options; the test
    part may be empty (``--test-identities 0`` / ``--test-count 0``), the training part may not."""
    table = read_attributes(cfg.attr_path, cfg.selected_attrs)
    rows = np.arange(len(table.names))
    mode = resolved_mode(cfg)
    wanted_by = "--test-split identities" if mode == "identities" else "--train-identities"
    need_people = mode == "identities" or cfg.train_identities > 0
    people = np.asarray(read_identities(identity_path(cfg), table, wanted_by)) if need_people else None
    if mode == "identities":
        held_out = np.isin(people, list(first_people(list(people), cfg.test_identities)))
        count = f"--test-identities {cfg.test_identities}"
    else:
        held_out = rows < cfg.test_count
        count = f"--test-count {cfg.test_count}"
    if part == "test":
        return subset(table, rows[held_out])
    rows = rows[~held_out]
    if cfg.train_identities > 0:
        rows = rows[np.isin(people[rows], list(first_people(list(people[rows]), cfg.train_identities)))]
    if not len(rows):
        raise FacelabError(f"the training split is empty: the attribute file has {len(table.names)} images and "
                           f"{count} holds them all out; lower it or add images")
    return subset(table, rows)


def test_dataset(cfg: StarGANConfig) -> CelebADataset:
    """The test split as a dataset, for ``stargan test`` and ``stargan fid``, which need images."""
    table = load_split(cfg, "test")
    if not table.names:
        raise FacelabError(f"the test split of {cfg.attr_path} is empty; give --test-identities or --test-count")
    return CelebADataset(cfg.image_root, table, cfg.crop_size, cfg.image_size)
