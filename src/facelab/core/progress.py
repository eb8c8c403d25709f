"""Progress bars with rate and ETA for every long job (one place to change their look)."""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T] | None = None, total: int | None = None, desc: str = "", unit: str = "it",
             initial: int = 0, disable: bool | None = None) -> tqdm:
    """A tqdm bar on stderr showing count, rate and ETA; quiet when stderr is not a terminal unless forced."""
    if disable is None:
        disable = not sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=disable,
                dynamic_ncols=True, smoothing=0.1, file=sys.stderr)
