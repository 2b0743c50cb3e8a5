"""Messages published per tenant, with a bounded number of label values.

``flowgate_tenant_messages_published_total{tenant}`` names at most ``limit`` users
(``FLOWGATE_METRICS_TENANTS``): at each scrape, while there is room, the busiest
users since the previous scrape get a label of their own, which they keep until
the process restarts; every other user's messages count under ``tenant="_other"``.
Every series is monotonic (a labelled tenant starts counting when it gets its
label), and memory holds only the users active since the last scrape, so
``/metrics`` does not grow with the number of users.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

OTHER = "_other"


class TenantTally(Collector):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._recent: dict[str, int] = {}  # user -> messages since the last scrape
        self._labelled: dict[str, int] = {}  # user -> messages counted under its own label
        self._other = 0

    def add(self, tenant: str) -> None:
        recent = self._recent
        recent[tenant] = recent.get(tenant, 0) + 1

    def collect(self) -> Iterator[CounterMetricFamily]:
        recent, self._recent = self._recent, {}
        labelled = self._labelled
        room = self.limit - len(labelled)
        if room > 0:
            for tenant in heapq.nlargest(room, (t for t in recent if t not in labelled), key=recent.__getitem__):
                labelled[tenant] = 0
        for tenant, count in recent.items():
            if tenant in labelled:
                labelled[tenant] += count
            else:
                self._other += count
        family = CounterMetricFamily(
            "flowgate_tenant_messages_published",
            f"Messages stored per user, for at most {self.limit} users (the rest as tenant={OTHER!r})",
            labels=["tenant"],
        )
        for tenant, count in labelled.items():
            family.add_metric([tenant], count)
        family.add_metric([OTHER], self._other)
        yield family
