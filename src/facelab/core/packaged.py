"""Files that ship inside installed pip packages (the offline weights), found without importing the
package: ``face_recognition_models`` needs pkg_resources on import and ``facenet_pytorch`` torchvision,
neither of which facelab installs."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from facelab.core.errors import FacelabError


@lru_cache(maxsize=None)
def packaged_file(package: str, relative: str, install: str) -> Path:
    """``relative`` inside ``package``'s folder, or one line saying to run ``install`` (a pip command)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FacelabError(f"the {package} package is missing; run: {install}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise FacelabError(f"{path} is missing; reinstall it: {install}")
    return path
