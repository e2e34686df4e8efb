"""Prometheus metrics of the service (one registry per app, so several apps in one process never collide).

Names (all prefixed ``querylife_``): ``requests_total{endpoint,status}``, ``request_duration_seconds{endpoint}``
(histogram), ``candidates_per_request{endpoint}`` (histogram), ``query_batch_size`` (histogram: queries per tower
forward), ``query_cache_hits_total``, ``rejected_requests_total{reason}``, ``inflight_requests`` (gauge).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "ENDPOINTS", "ServiceMetrics", "endpoint_label"]

ENDPOINTS = ("/v1/relevance", "/v1/search", "/v1/embed", "/healthz", "/readyz", "/metrics")

# Latency buckets from 1 ms to 10 s: the targets sit at 10-20 ms, timeouts at seconds.
_LATENCY = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZES = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def endpoint_label(path: str) -> str:
    """The metrics label of a request path: a known endpoint, else "other" (arbitrary paths would each make a
    time series)."""
    return path if path in ENDPOINTS else "other"


class ServiceMetrics:
    """The service's collectors in their own registry; ``render()`` gives the text exposition format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("querylife_requests_total", "Requests by endpoint and HTTP status.",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("querylife_request_duration_seconds", "Request latency by endpoint.",
                                 ["endpoint"], buckets=_LATENCY, registry=r)
        self.candidates = Histogram("querylife_candidates_per_request", "Candidates (or k / items) per request.",
                                    ["endpoint"], buckets=_SIZES, registry=r)
        self.query_batch = Histogram("querylife_query_batch_size", "Queries per query-tower forward.",
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.cache_hits = Counter("querylife_query_cache_hits_total", "Query vectors served from the cache.",
                                  registry=r)
        self.rejected = Counter("querylife_rejected_requests_total",
                                "Requests refused: over_capacity, body_too_large, unauthorized, invalid, "
                                "unknown_ids, timeout, not_ready.", ["reason"], registry=r)
        self.inflight = Gauge("querylife_inflight_requests", "Admitted /v1 requests now in flight.", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
