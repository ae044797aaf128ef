"""Read a Prometheus ``/metrics`` page in tests, with prometheus-client's own parser."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Samples", "scrape", "value", "wait_for_metrics"]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample of a ``/metrics`` page, by name and labels, parsed with prometheus-client's
    own parser."""
    response = httpx.get(url, timeout=10.0)
    response.raise_for_status()
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name{labels}`` (labels matched exactly); 0 when absent (never recorded)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_for_metrics(url: str, done: Callable[[Samples], bool], timeout: float = 30.0) -> Samples:
    """Scrape until ``done(samples)`` holds: a run is counted when its task ends, a moment after
    its stream's last event reached the client. Raises ``AssertionError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if done(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError("the metrics awaited were not recorded")
        time.sleep(0.1)
