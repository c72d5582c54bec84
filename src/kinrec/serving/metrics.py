"""Prometheus metrics of one service instance (its own registry, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip


class Metrics:
    """Request latency histograms, event counts, cache and index sizes."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Histogram(
            "kinrec_request_seconds",
            "Request latency by route, method and status",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.events = Counter(
            "kinrec_events_total", "Events stored and folded in, by type", ["type"], registry=r
        )
        self.cache = Counter(
            "kinrec_cache_total", "Recommendation cache lookups", ["result"], registry=r
        )
        self.index_items = Gauge("kinrec_index_items", "Items in the retrieval index", registry=r)
        self.catalog_items = Gauge(
            "kinrec_catalog_items", "Recommendable items (not retired)", registry=r
        )
        self.online_users = Gauge(
            "kinrec_online_users", "Users with events since training", registry=r
        )
        self.auth_failures = Counter(
            "kinrec_auth_failures_total", "Rejected requests by status", ["status"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
