"""Prometheus metrics of outgoing webhooks, on the process's registry (``gateway.metrics.Metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter(
            "flowgate_webhook_attempts",
            "Webhook delivery attempts, by outcome (delivered, failed, dead_letter)",
            ["outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "flowgate_webhook_latency_seconds",
            "Time from sending a webhook request to its answer (or failure)",
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )

    def observe(self, outcome: str, latency: float) -> None:
        self.attempts.labels(outcome).inc()
        self.latency.observe(latency)
