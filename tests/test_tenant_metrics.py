"""The per-user metric names a bounded number of users, and every series it exports only grows."""

from __future__ import annotations

from gateway.metrics import Metrics
from gateway.tenant_metrics import OTHER, TenantTally


def scrape(tally: TenantTally) -> dict[str, float]:
    (family,) = tally.collect()
    return {sample.labels["tenant"]: sample.value for sample in family.samples}


def test_the_busiest_users_get_labels_up_to_the_limit_and_the_rest_are_aggregated() -> None:
    tally = TenantTally(limit=2)
    for tenant, count in (("a", 5), ("b", 1), ("c", 9)):
        for _ in range(count):
            tally.add(tenant)
    assert scrape(tally) == {"c": 9, "a": 5, OTHER: 1}  # the two busiest since the last scrape
    for tenant, count in (("b", 50), ("a", 1), ("d", 3)):
        for _ in range(count):
            tally.add(tenant)
    # the labels are full: b, now the busiest, stays under _other (labels are kept, series stay monotonic)
    assert scrape(tally) == {"c": 9, "a": 6, OTHER: 54}
    assert scrape(tally) == {"c": 9, "a": 6, OTHER: 54}  # nothing new: nothing changes


def test_thousands_of_users_make_a_bounded_metrics_page() -> None:
    metrics = Metrics(tenant_labels=20)
    assert metrics.tenants is not None
    for n in range(5000):
        metrics.tenants.add(f"user{n}")
    page = metrics.render().decode()
    lines = [line for line in page.splitlines() if line.startswith("flowgate_tenant_messages_published_total{")]
    assert len(lines) == 21
    assert sum(float(line.rsplit(" ", 1)[1]) for line in lines) == 5000
    assert Metrics(tenant_labels=0).tenants is None
