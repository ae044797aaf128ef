"""The event-loop lag monitor (``parley.telemetry.loop``) sees a stall, in process: a callback that
holds the loop for 50 ms shows as a lag of at least 50 ms minus the interval, and the settings
reach it."""

from __future__ import annotations

import asyncio
import time

import pytest
from parley.config import Settings
from parley.telemetry.loop import LoopLagMonitor


def test_a_stall_shows_as_a_lag_of_at_least_its_length_minus_the_interval() -> None:
    async def main() -> tuple[float, float]:
        monitor = LoopLagMonitor(interval_s=0.002, window_s=30.0)
        monitor.start()
        await asyncio.sleep(0.05)  # measuring
        quiet = monitor.max_lag()
        time.sleep(0.05)  # noqa: ASYNC251 - the point: it holds the loop, no wake-up can run
        await asyncio.sleep(0.02)  # the monitor's late wake-up has run
        stalled = monitor.max_lag()
        await monitor.stop()
        return quiet, stalled

    quiet, stalled = asyncio.run(main())
    assert stalled >= 0.05 - 0.002
    assert stalled > quiet


def test_the_interval_and_window_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_LOOP_LAG_INTERVAL_S", "0.002")
    monkeypatch.setenv("PARLEY_LOOP_LAG_WINDOW_S", "1.5")
    settings = Settings()
    assert (settings.loop_lag_interval_s, settings.loop_lag_window_s) == (0.002, 1.5)
