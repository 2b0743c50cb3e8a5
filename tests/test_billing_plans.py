"""Plans, overrides, prices and billing periods."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from gateway.billing.meter import Period
from gateway.billing.plans import Catalog, Operation, validate_overrides
from gateway.errors import BadRequest
from gateway.settings import Settings, SettingsError


def test_built_in_plans() -> None:
    catalog = Catalog.load(None, server_max_bytes=1024 * 1024)
    assert set(catalog.plans) == {"free", "pro"}
    assert catalog.plans["free"].quota < catalog.plans["pro"].quota
    assert catalog.plans["pro"].max_message_bytes == 1024 * 1024  # capped at the server's maximum
    assert [catalog.prices.of(op) for op in Operation] == [1, 1, 1]


def test_plans_file_and_prices(tmp_path: Path) -> None:
    path = tmp_path / "plans.json"
    plan = {"quota": 1000, "rate": 5, "burst": 10, "max_connections": 2, "max_message_bytes": 100}
    path.write_bytes(orjson.dumps({"plans": {"tiny": plan}, "prices": {"delivery": 2}}))
    catalog = Catalog.load(path, server_max_bytes=1024)
    assert catalog.plans["tiny"].quota == 1000 and catalog.plans["tiny"].rate == 5.0
    assert catalog.prices.delivery == 2 and catalog.prices.publish == 1
    assert catalog.plan("gone").name == "tiny"  # a removed plan falls back to the first one
    with pytest.raises(BadRequest, match="unknown plan"):
        catalog.check_name("free")


@pytest.mark.parametrize(
    "document",
    [
        {"plans": {}},
        {"plans": {"x": {"quota": 1}}},
        {"plans": {"x": {"quota": -1, "rate": 1, "burst": 1, "max_connections": 1, "max_message_bytes": 1}}},
        {
            "plans": {"x": {"quota": 1, "rate": 1, "burst": 1, "max_connections": 1, "max_message_bytes": 1}},
            "prices": {"x": 1},
        },
    ],
)
def test_a_broken_plans_file_stops_start_up(tmp_path: Path, document: object) -> None:
    path = tmp_path / "plans.json"
    path.write_bytes(orjson.dumps(document))
    with pytest.raises(SettingsError, match="FLOWGATE_PLANS_FILE"):
        Settings.from_env({"FLOWGATE_PLANS_FILE": str(path)})


def test_overrides() -> None:
    catalog = Catalog.load(None, server_max_bytes=1024 * 1024)
    limits = catalog.limits_for("free", {"limits": {"quota": 50, "rate": 2.5}})
    assert (limits.quota, limits.rate, limits.burst) == (50, 2.5, catalog.plans["free"].burst)
    assert validate_overrides({"quota": 10.0}) == {"quota": 10}
    bad: object
    for bad in ({"quota": 1.5}, {"nope": 1}, {"burst": 0}, {"rate": True}, []):
        with pytest.raises(BadRequest):
            validate_overrides(bad)


def test_periods_are_calendar_months_in_utc() -> None:
    period = Period.at(datetime(2026, 12, 31, 23, 59, tzinfo=UTC).timestamp())
    assert period.id == "2026-12"
    assert period.start == datetime(2026, 12, 1, tzinfo=UTC)
    assert period.end == datetime(2027, 1, 1, tzinfo=UTC)
    assert Period.at(datetime(2027, 1, 1, tzinfo=UTC).timestamp()).id == "2027-01"
