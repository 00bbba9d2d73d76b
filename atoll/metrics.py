"""Prometheus metrics: one registry per daemon, served on `--metrics-listen` (off unless set).

Each daemon builds its own `CollectorRegistry` (never prometheus_client's
global one), so several daemons in one process (tests, hollow benchmarks)
keep their figures apart. Counters and histograms are updated where the work
happens; figures that already exist as state (nodes by condition, pods held)
are read at scrape time by collectors, which costs nothing between scrapes.

The listener is plain HTTP. It is off by default; an operator who turns it
on chooses the address (loopback, or the management network a Prometheus
scrapes from): the figures carry node and pod counts, no secrets.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from atoll import config as layered
from atoll import errors
from atoll.gcpolicy import GCPauses

log = logging.getLogger(__name__)

#: Latency buckets for calls that take from a millisecond to tens of seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class MetricsServer:
    """The /metrics listener of one daemon: a prometheus_client HTTP server on a thread."""

    def __init__(self, registry: CollectorRegistry, listen: str) -> None:
        self.registry = registry
        self.listen = listen
        self.port = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> MetricsServer:
        host, port = layered.split_host_port(self.listen, "metrics_listen")
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise errors.InvalidArgument(f"metrics_listen: cannot listen on {self.listen}: {exc}") from None
        self.port = int(self._server.server_address[1])
        log.info("metrics on http://%s:%d/metrics", host, self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class Gauges(Collector):
    """Gauges computed at scrape time: `read()` yields (labels, value) for one metric family."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Iterable[str],
        read: Callable[[], Iterable[tuple[tuple[str, ...], float]]],
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self.read = read

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        try:
            for labels, value in self.read():
                family.add_metric(list(labels), value)
        except Exception:  # a scrape never breaks the daemon; the figure is left out
            log.exception("metric %s could not be read", self.name)
            return
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())


class GCPauseMetrics(Collector):
    """What Python's garbage collections cost this process, read from a `GCPauses` at scrape time."""

    def __init__(self, pauses: GCPauses) -> None:
        self.pauses = pauses

    def collect(self) -> Iterator[Metric]:
        count = CounterMetricFamily(
            "atoll_gc_collections", "Python garbage collections by generation", labels=["generation"]
        )
        seconds = CounterMetricFamily(
            "atoll_gc_pause_seconds",
            "Time in Python garbage collections by generation (the GIL is held: every thread waits)",
            labels=["generation"],
        )
        longest = GaugeMetricFamily(
            "atoll_gc_longest_pause_seconds",
            "Longest Python garbage collection so far",
            labels=["generation"],
        )
        for generation, g in sorted(self.pauses.generations.items()):
            label = [str(generation)]
            count.add_metric(label, g.collections)
            seconds.add_metric(label, g.seconds)
            longest.add_metric(label, g.longest)
        yield from (count, seconds, longest)

    def describe(self) -> Iterator[Metric]:
        return iter(())
