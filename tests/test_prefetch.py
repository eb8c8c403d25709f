"""The background-thread prefetch merge uses to overlap the model with compositing."""

from __future__ import annotations

import threading
import time

import pytest

from facelab.core.prefetch import prefetch


def test_yields_every_item_in_order_while_computing_ahead():
    made: list[int] = []

    def items():
        for i in range(6):
            made.append(i)
            yield i

    out = []
    for item in prefetch(items(), depth=2):
        time.sleep(0.02)  # the consumer is slow: the producer runs ahead, but at most `depth` items
        assert len(made) - item <= 4
        out.append(item)
    assert out == list(range(6))


def test_a_producer_error_is_raised_in_the_consumer_at_its_place():
    def items():
        yield 1
        raise ValueError("broken batch")

    got = []
    with pytest.raises(ValueError, match="broken batch"):
        for item in prefetch(items()):
            got.append(item)
    assert got == [1]


def test_leaving_early_stops_the_thread():
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    for item in prefetch(endless(), depth=1):
        if item == 3:
            break
    assert not [t for t in threading.enumerate() if t.name == "facelab-prefetch"]
    n = len(produced)
    time.sleep(0.1)
    assert len(produced) == n <= 3 + 3
