"""Prometheus metrics of one gateway process, served at ``/metrics``.

The registry belongs to the process's ``Services`` (no module-level registry),
so tests and several apps in one interpreter never share counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
