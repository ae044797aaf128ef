"""Start-up's objects are frozen out of the garbage collector's full collections
(``parley.app.freeze_start_up``, called by ``serve`` once the server is built)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from parley.app import freeze_start_up


class _Node:
    def __init__(self) -> None:
        self.peer: _Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test process collects as usual


def test_start_up_garbage_is_collected_and_the_rest_frozen(unfrozen: None) -> None:
    garbage_a, garbage_b = _Node(), _Node()
    garbage_a.peer, garbage_b.peer = garbage_b, garbage_a  # a cycle: only the collector frees it
    garbage = weakref.ref(garbage_a)
    del garbage_a, garbage_b
    kept = _Node()
    assert gc.get_freeze_count() == 0

    freeze_start_up()

    assert garbage() is None, "start-up garbage in a cycle was frozen instead of collected"
    assert gc.get_freeze_count() > 1000
    assert not any(obj is kept for obj in gc.get_objects()), "a live start-up object is still collected"
