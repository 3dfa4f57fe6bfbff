"""What both processes export to Prometheus: the connection pools, and a cheap rendering of it all.

Label values are always from a small fixed set (a pool's name, a route
template, a task name, a status, a limit's name): never a tenant id, a raw
path, a key or anything a client chooses, so no caller can grow the number of
series.  `bounded_label` enforces that for values that come from elsewhere.

The exposition is rendered at most once per `RENDER_SECONDS` and cached, so a
scrape costs a dictionary lookup however often it comes.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from quarry.db import TenantDatabase

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RENDER_SECONDS = 1.0
_LABEL = re.compile(r"[a-z][a-z0-9_.:-]{0,63}")

# No `_created` series beside every counter: half the text, for nothing we use.
disable_created_metrics()  # type: ignore[no-untyped-call]

POOL_TIMEOUTS = Counter(
    "quarry_db_pool_timeouts",
    "Requests for a database connection that waited the pool timeout in vain (answered 503).",
    ["pool"],
)


def bounded_label(value: object, allowed: Iterable[str] | None = None, *, other: str = "other") -> str:
    """A label value that cannot blow up the series: from `allowed`, or name-shaped, else `other`."""
    text = str(value) if value is not None else ""
    if allowed is not None:
        return text if text in allowed else other
    return text if _LABEL.fullmatch(text) else other


class PoolStats(Collector):
    """Each watched TenantDatabase's pools: connections open, idle and the most allowed,
    requests waiting, and (cumulative) requests served and their wait."""

    def __init__(self) -> None:
        self._databases: list[TenantDatabase] = []
        self._lock = threading.Lock()

    def watch(self, database: TenantDatabase) -> None:
        with self._lock:
            self._databases.append(database)

    def unwatch(self, database: TenantDatabase) -> None:
        with self._lock:
            self._databases = [watched for watched in self._databases if watched is not database]

    def collect(self) -> Iterator[Metric]:
        connections = GaugeMetricFamily(
            "quarry_db_pool_connections", "Database connections of a pool, by state.", labels=["pool", "state"]
        )
        waiting = GaugeMetricFamily(
            "quarry_db_pool_requests_waiting", "Requests waiting for a connection now.", labels=["pool"]
        )
        requests = CounterMetricFamily("quarry_db_pool_requests", "Connections handed out by a pool.", labels=["pool"])
        wait_seconds = CounterMetricFamily(
            "quarry_db_pool_wait_seconds", "Time requests spent waiting for a connection.", labels=["pool"]
        )
        with self._lock:
            databases = list(self._databases)
        for database in databases:
            for name, pool in (("tenant", database.pool), ("service", database.service_pool)):
                stats = pool.get_stats()
                connections.add_metric([name, "open"], stats.get("pool_size", 0))
                connections.add_metric([name, "idle"], stats.get("pool_available", 0))
                connections.add_metric([name, "max"], stats.get("pool_max", 0))
                waiting.add_metric([name], stats.get("requests_waiting", 0))
                requests.add_metric([name], stats.get("requests_num", 0))
                wait_seconds.add_metric([name], stats.get("requests_wait_ms", 0) / 1000)
        yield from (connections, waiting, requests, wait_seconds)


POOL_STATS = PoolStats()
REGISTRY.register(POOL_STATS)


class Exposition:
    """The registry in Prometheus text format, rendered at most once per RENDER_SECONDS."""

    def __init__(self, registry: CollectorRegistry = REGISTRY, *, max_age: float = RENDER_SECONDS) -> None:
        self._registry = registry
        self._max_age = max_age
        self._body = b""
        self._rendered_at = float("-inf")
        self._lock = threading.Lock()

    def render(self) -> bytes:
        with self._lock:
            now = time.monotonic()
            if now - self._rendered_at >= self._max_age:
                self._body = generate_latest(self._registry)
                self._rendered_at = now
            return self._body
