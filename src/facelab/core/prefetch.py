"""Run a generator one step ahead in a background thread.

Merge uses it to keep the model busy on the next batch of faces while the current frames are
composited: torch and OpenCV release the GIL in their kernels, so on a 2-core CPU the network and the
compositing really do run at the same time.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_END = object()


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` while a thread computes up to ``depth`` of the following ones.

    An exception raised while producing an item is raised here, in the consumer, at that item's place.
    Closing the iterator early (break, an error, Ctrl-C) stops the thread after the item it is on.
    """
    slots: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put((_END, exc))

    worker = threading.Thread(target=produce, name="facelab-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = slots.get()
            if item is _END:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        worker.join()
