"""The inference engine's own metrics, beside the per-method ones every service exports."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from steerlab.serving.metrics import LATENCY_BUCKETS

BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256)


class InferenceMetrics:
    """Time to first token, tokens, batch size, queue depth, steering cache hits and misses."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ttft = Histogram(
            "steerlab_inference_time_to_first_token_seconds",
            "From a request's arrival to its first generated token",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "steerlab_inference_generated_tokens", "Tokens generated, all requests", registry=registry
        )
        self.batch = Histogram(
            "steerlab_inference_batch_size",
            "Rows in each decode step",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.queue = Gauge(
            "steerlab_inference_queue_depth", "Requests waiting for a batch slot", registry=registry
        )
        self.finishes = Counter(
            "steerlab_inference_finished_requests",
            "Requests that left the engine, by reason (stop, length, cancelled, deadline)",
            ["reason"],
            registry=registry,
        )
        self.hits = Counter(
            "steerlab_inference_steering_cache_hits",
            "Vector set lookups served from prepared tensors",
            registry=registry,
        )
        self.misses = Counter(
            "steerlab_inference_steering_cache_misses",
            "Vector set lookups that fetched from the registry",
            registry=registry,
        )

    def queued(self, depth: int) -> None:
        self.queue.set(depth)

    def stepped(self, rows: int, tokens: int) -> None:
        self.batch.observe(rows)
        self.tokens.inc(tokens)

    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)
        self.tokens.inc()

    def finished(self, reason: str) -> None:
        self.finishes.labels(reason).inc()

    def cache_hit(self) -> None:
        self.hits.inc()

    def cache_miss(self) -> None:
        self.misses.inc()
