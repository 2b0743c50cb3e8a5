"""Prometheus metrics of one gateway process, served at ``/metrics``.

The registry belongs to the process's ``Services`` (no module-level registry),
so tests and several apps in one interpreter never share counters.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.tenant_metrics import TenantTally

# Seconds from a publish being sent to JetStream to its acknowledgement.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# One publish in this many is timed (a histogram observation costs about as much as a tenth of a publish).
LATENCY_SAMPLE = 16


class Metrics:
    def __init__(self, tenant_labels: int = 20) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # messages per user, at most ``tenant_labels`` users named (gateway/tenant_metrics.py); 0: off
        self.tenants = TenantTally(tenant_labels) if tenant_labels > 0 else None
        if self.tenants is not None:
            self.registry.register(self.tenants)
        self.published = Counter(
            "flowgate_messages_published",
            "Messages stored, by front-end protocol",
            ["protocol"],
            registry=self.registry,
        )
        self.delivered = Counter(
            "flowgate_messages_delivered",
            "Messages handed to subscribers, by protocol",
            ["protocol"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "flowgate_messages_rejected",
            "Publishes refused or dropped, by protocol and reason",
            ["protocol", "reason"],
            registry=self.registry,
        )
        self.slow_consumers = Counter(
            "flowgate_slow_consumers_closed",
            "Connections closed because their outbound buffer was full",
            ["protocol"],
            registry=self.registry,
        )
        self.connections = Gauge(
            "flowgate_connections", "Open client connections, by protocol", ["protocol"], registry=self.registry
        )
        self.publish_latency = Histogram(
            "flowgate_publish_latency_seconds",
            f"Time from sending a publish to JetStream's acknowledgement (1 in {LATENCY_SAMPLE} sampled), by protocol",
            ["protocol"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.http_errors = Counter(
            "flowgate_http_errors",
            "HTTP responses with a 4xx or 5xx status, by status",
            ["status"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Tally:
    """Adds to a (labelled) counter once per event-loop iteration rather than once per message.

    A prometheus ``inc`` takes a lock; a burst of messages handled in one
    iteration costs one ``inc`` here.
    """

    __slots__ = ("_count", "_counter", "_scheduled")

    def __init__(self, counter: Counter) -> None:
        self._counter = counter
        self._count = 0
        self._scheduled = False

    def add(self, amount: int = 1) -> None:
        self._count += amount
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        count, self._count = self._count, 0
        if count:
            self._counter.inc(count)
