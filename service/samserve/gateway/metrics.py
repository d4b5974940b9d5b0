"""The gateway's Prometheus metrics (names are part of ARCHITECTURE.md's contract)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """One instance per server; a registry of its own so tests can run several servers."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # model: a served model's name ("" where no model applies: ListModels, a refused token)
        self.requests = Counter(
            "samserve_requests", "RPCs by method, status and model", ["method", "code", "model"], registry=r
        )
        self.latency = Histogram(
            "samserve_request_seconds",
            "RPC latency",
            ["method", "code", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.http_requests = Counter(
            "samserve_http_requests", "HTTP requests by route and status code", ["route", "status"], registry=r
        )
        self.http_latency = Histogram(
            "samserve_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("samserve_requests_in_flight", "RPCs being served", registry=r)
        self.cache = Counter("samserve_cache", "embedding cache lookups", ["result"], registry=r)
        self.cache_errors = Counter(
            "samserve_cache_errors", "Redis errors (the request went on uncached)", ["op"], registry=r
        )
        self.backend_latency = Histogram(
            "samserve_backend_seconds", "Triton call latency", ["model"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.image_bytes = Histogram(
            "samserve_image_bytes", "encoded image size", buckets=(1e4, 1e5, 1e6, 4e6, 16e6, 64e6), registry=r
        )
        self.image_pixels = Histogram(
            "samserve_image_pixels",
            "decoded image pixels",
            buckets=(1e4, 1e5, 1e6, 4e6, 16e6, 64e6),
            registry=r,
        )
        self.encoder_runs = Counter("samserve_encoder_runs", "encoder calls made by this gateway", registry=r)
        self.stalled_clients = Counter(
            "samserve_stalled_clients",
            "streamed answers ended because the client read nothing for stream_idle_timeout_s",
            ["transport"],
            registry=r,
        )
        self.stalled_clients.labels("grpc")
        self.stalled_clients.labels("http")
        # known label values exist from the start (at 0), so rates and ratios are defined before the first event
        for result in ("hit", "miss", "corrupt"):
            self.cache.labels(result)
        for op in ("get", "set", "exists", "lock", "extend", "unlock"):
            self.cache_errors.labels(op)
