"""Worker process pools that can neither hang their parent nor bury its messages.

Pools are started with ``spawn``: a forked worker inherits whatever locks the parent's threads held at
the fork (a pool's own result thread among them) and can block for ever on one, which hung ``facelab
extract`` on exit; it also inherits the CLI's SIGTERM handler, so a ``terminate()`` made every worker
print a KeyboardInterrupt traceback. Spawned workers start from a clean interpreter, ignore the
terminal's Ctrl-C (SIGINT goes to the whole process group; the parent decides what stops) and die
silently on SIGTERM.
"""

from __future__ import annotations

import multiprocessing
import signal
from multiprocessing.pool import Pool
from typing import Any, Callable


def _start(initializer: Callable[..., None] | None, initargs: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if initializer is not None:
        initializer(*initargs)


def worker_pool(processes: int, initializer: Callable[..., Any] | None = None, initargs: tuple = ()) -> Pool:
    """A spawned pool of ``processes`` workers, each running ``initializer(*initargs)`` once."""
    return multiprocessing.get_context("spawn").Pool(processes, _start, (initializer, initargs))


def close_pool(pool: Pool, finished: bool) -> None:
    """Let the workers finish and exit when the job ``finished``; otherwise stop them at once."""
    if finished:
        pool.close()
    else:
        pool.terminate()
    pool.join()
