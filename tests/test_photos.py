"""The fetched sample photos: pinned archives, checked hashes, cached once."""

from __future__ import annotations

import dataclasses

import pytest

from facelab.core.errors import FacelabError
from facelab.samples import photos


def test_cached_photos_are_not_fetched_again(fetched_photos, monkeypatch):
    def no_download(*_):
        raise AssertionError("downloaded although every photo is cached")

    monkeypatch.setattr(photos, "_download", no_download)
    assert photos.fetch_photos() == fetched_photos
    names = {name for archive in photos.ARCHIVES for name in archive.photos.values()}
    assert names == {p.name for p in fetched_photos.iterdir()}


def test_an_archive_that_does_not_match_its_hash_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("FACELAB_CACHE", str(tmp_path))
    forged = dataclasses.replace(photos.ARCHIVES[2], sha256="0" * 64)  # the 1.2 MB wheel
    monkeypatch.setattr(photos, "ARCHIVES", (forged,))
    refused = r"could not download insightface==2\.1 from PyPI \(its sha256 is not the pinned one\)"
    with pytest.raises(FacelabError, match=refused) as err:
        photos.fetch_photos()
    assert "\n" not in str(err.value)
    assert not (tmp_path / "photos").exists() or not any((tmp_path / "photos").iterdir())
