"""``PARLEY_EVENT_LOOP``: the server runs on uvloop by default, on the standard loop when asked."""

from __future__ import annotations

import asyncio

import pytest
import uvloop
from parley.__main__ import run
from parley.config import Settings


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def _ran_on(event_loop: str) -> type:
    seen: list[type] = []

    async def main() -> None:
        seen.append(await _loop_type())

    run(main(), event_loop)
    return seen[0]


def test_the_default_is_uvloop() -> None:
    assert Settings().event_loop == "uvloop"
    assert issubclass(_ran_on("uvloop"), uvloop.Loop)


def test_asyncio_runs_the_standard_loop() -> None:
    loop = _ran_on("asyncio")
    assert not issubclass(loop, uvloop.Loop)
    assert issubclass(loop, asyncio.BaseEventLoop)


def test_without_uvloop_the_standard_loop_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvloop", None)  # ``import uvloop`` raises ImportError
    assert not issubclass(_ran_on("uvloop"), uvloop.Loop)


def test_an_unknown_loop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_EVENT_LOOP", "trio")
    with pytest.raises(ValueError, match="event_loop"):
        Settings()
