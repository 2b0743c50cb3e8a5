"""A JSON view of what ``/metrics`` counts, with per-second rates, for the admin's live server view.

``ServerStats`` reads the process's Prometheus registry (no second set of
counters on the hot path) and keeps the previous reading, so each call can say
how many messages per second went in and out since the one before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.metrics import Metrics

RATE_FIELDS = ("published", "delivered", "rejected", "slow_consumers", "http_4xx", "http_5xx")


def _by_label(metrics: Metrics, name: str, label: str) -> dict[str, float]:
    """The samples of metric ``name`` (a counter's ``_total`` or a gauge) summed by ``label``."""
    out: dict[str, float] = {}
    for family in metrics.registry.collect():
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name in (name, name + "_total"):
                key = sample.labels.get(label, "")
                out[key] = out.get(key, 0.0) + sample.value
    return out


@dataclass
class ServerStats:
    metrics: Metrics
    clock: Callable[[], float] = time.monotonic
    _last: tuple[float, dict[str, float]] | None = field(default=None, init=False)

    def read(self) -> dict[str, Any]:
        connections = _by_label(self.metrics, "flowgate_connections", "protocol")
        published = _by_label(self.metrics, "flowgate_messages_published", "protocol")
        delivered = _by_label(self.metrics, "flowgate_messages_delivered", "protocol")
        rejected = _by_label(self.metrics, "flowgate_messages_rejected", "reason")
        slow = _by_label(self.metrics, "flowgate_slow_consumers_closed", "protocol")
        http = _by_label(self.metrics, "flowgate_http_errors", "status")
        totals = {
            "published": sum(published.values()),
            "delivered": sum(delivered.values()),
            "rejected": sum(rejected.values()),
            "slow_consumers": sum(slow.values()),
            "http_4xx": sum(n for status, n in http.items() if status.startswith("4")),  # labels are statuses
            "http_5xx": sum(n for status, n in http.items() if status.startswith("5")),
        }
        now = self.clock()
        rates = dict.fromkeys(RATE_FIELDS, 0.0)
        if self._last is not None and now > self._last[0]:
            elapsed = now - self._last[0]
            rates = {k: round(max(0.0, totals[k] - self._last[1][k]) / elapsed, 2) for k in RATE_FIELDS}
        self._last = (now, totals)
        return {
            "connections": {k: int(v) for k, v in connections.items()},
            "connections_total": int(sum(connections.values())),
            "published": {k: int(v) for k, v in published.items()},
            "delivered": {k: int(v) for k, v in delivered.items()},
            "rejected": {k: int(v) for k, v in rejected.items()},
            "slow_consumers": {k: int(v) for k, v in slow.items()},
            "totals": {k: int(v) for k, v in totals.items()},
            "per_second": rates,
        }
