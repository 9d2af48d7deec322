"""Prometheus metrics (one registry per app, so tests can run many apps) and JSON logs."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "rixin_requests",
            "HTTP requests by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rixin_request_seconds",
            "HTTP request latency (to the end of the body, streams included).",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.02, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.tokens = Counter(
            "rixin_tokens",
            "Tokens processed by model and kind (prompt, completion).",
            ["model", "kind"],
            registry=self.registry,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def count_tokens(self, model: str, prompt: int, completion: int) -> None:
        if prompt:
            self.tokens.labels(model, "prompt").inc(prompt)
        if completion:
            self.tokens.labels(model, "completion").inc(completion)

    def watch_routers(self, snapshot: Callable[[], dict[str, dict[str, Any]]]) -> None:
        """Export queue depth, in-flight and health per replica from the model routers."""
        self.registry.register(_RouterCollector(snapshot))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _RouterCollector(Collector):
    def __init__(self, snapshot: Callable[[], dict[str, dict[str, Any]]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        queued = GaugeMetricFamily("rixin_queue_depth", "Requests waiting.", labels=["model"])
        in_flight = GaugeMetricFamily(
            "rixin_in_flight", "Requests running per replica.", labels=["model", "replica"]
        )
        healthy = GaugeMetricFamily(
            "rixin_backend_healthy", "1 if a replica takes traffic.", labels=["model", "replica"]
        )
        for model, snap in self.snapshot().items():
            queued.add_metric([model], float(snap.get("queued", 0)))
            for replica in snap.get("replicas", []):
                labels = [model, str(replica.get("name"))]
                in_flight.add_metric(labels, float(replica.get("in_flight", 0)))
                healthy.add_metric(labels, 1.0 if replica.get("available", True) else 0.0)
        yield from (queued, in_flight, healthy)

    def describe(self) -> Iterable[Metric]:
        return []


class JSONFormatter(logging.Formatter):
    """One JSON object per line; ``extra`` fields are kept, secrets never reach here."""

    _STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per upstream call
