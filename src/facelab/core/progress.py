"""Progress bars with rate and ETA for every long job (one place to change their look).

On a terminal the bar redraws in place. Where stderr is a file or a pipe (a job scheduler, ``nohup``,
CI, a notebook's subprocess) a redrawn bar would be one endless line of carriage returns, and no bar at
all would leave a long job silent: there, a job that runs longer than :data:`PLAIN_EVERY_S` prints one
plain line with count, rate and ETA every :data:`PLAIN_EVERY_S` seconds, and short jobs print nothing.
"""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")
PLAIN_EVERY_S = 10.0


class _PlainLines:
    """A stream for tqdm that turns each redraw into one line of its own."""

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            sys.stderr.write(text + "\n")

    def flush(self) -> None:
        sys.stderr.flush()


def progress(iterable: Iterable[T] | None = None, total: int | None = None, desc: str = "", unit: str = "it",
             initial: int = 0, disable: bool = False) -> tqdm:
    """A bar on stderr showing count, rate and ETA: redrawn on a terminal, plain lines elsewhere."""
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=disable,
                    dynamic_ncols=True, smoothing=0.1, file=sys.stderr)
    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=disable, file=_PlainLines(),
                ncols=100, ascii=True, mininterval=PLAIN_EVERY_S, maxinterval=PLAIN_EVERY_S, delay=PLAIN_EVERY_S,
                smoothing=0.1)
