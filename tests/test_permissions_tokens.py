"""Token permissions and JWT verification (pure unit tests)."""

from __future__ import annotations

import json

import jwt
import pytest

from auth.permissions import Permissions, Rule
from auth.tokens import TokenService
from gateway.errors import BadRequest, Unauthorized
from gateway.topics import Namespace

KEY = b"k" * 32
NS = Namespace("alice", "app")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_default_permissions_allow_everything_in_the_namespace() -> None:
    rule = Rule()
    assert rule.permits_topic("any/thing") and rule.permits_topic("$x") and rule.permits_filter("#")


def test_allow_and_deny() -> None:
    rule = Rule(allow=("sensors/#",), deny=("sensors/secret/#",))
    assert rule.permits_topic("sensors/a")
    assert not rule.permits_topic("other")
    assert not rule.permits_topic("sensors/secret/x")
    assert rule.permits_filter("sensors/+")
    assert not rule.permits_filter("#")
    assert not rule.permits_filter("sensors/secret/#")
    assert rule.hides("sensors/secret/x") and not rule.hides("sensors/a")


@pytest.mark.parametrize(
    "value",
    [[], {"publish": "all"}, {"publish": {"allow": "a"}}, {"publish": {"allow": ["a/#/b"]}}, {"other": {}}],
)
def test_invalid_permissions_are_400(value: object) -> None:
    with pytest.raises(BadRequest):
        Permissions.from_json(value)


def test_issue_and_verify_round_trip() -> None:
    service = TokenService(KEY, default_ttl=900, max_ttl=3600, clock=Clock())
    perms = Permissions(publish=Rule(allow=("a/#",)))
    token, claims = service.issue(NS, permissions=perms)
    verified = service.verify(token)
    assert (
        verified.namespace == NS and verified.permissions == perms and verified.expires_at - verified.issued_at == 900
    )
    assert claims.jti == verified.jti


def test_expired_token_is_refused_even_when_cached() -> None:
    clock = Clock()
    service = TokenService(KEY, default_ttl=10, max_ttl=3600, clock=clock)
    token, _ = service.issue(NS)
    service.verify(token)
    clock.now += 11
    with pytest.raises(Unauthorized, match="expired"):
        service.verify(token)


@pytest.mark.parametrize("ttl", [0, -5, 3601])
def test_ttl_bounds(ttl: int) -> None:
    with pytest.raises(BadRequest):
        TokenService(KEY, default_ttl=10, max_ttl=3600).issue(NS, ttl=ttl)


def test_alg_none_wrong_key_and_tampering_are_refused() -> None:
    service = TokenService(KEY, default_ttl=900, max_ttl=3600)
    token, _ = service.issue(NS)
    header, _, signature = token.split(".")
    # an unsigned token: pyjwt's "none" algorithm reads the key "" as no key (its annotations leave out None)
    unsigned = jwt.encode({"sub": "alice", "app": "app", "iat": 1, "exp": 2**31, "jti": "x"}, "", algorithm="none")
    forged = jwt.encode(
        {"sub": "alice", "app": "app", "iat": 1, "exp": 2**31, "jti": "x"}, b"w" * 32, algorithm="HS256"
    )
    other_user = jwt.decode(token, KEY, algorithms=["HS256"]) | {"sub": "mallory"}
    tampered = ".".join([header, jwt.utils.base64url_encode(json.dumps(other_user).encode()).decode(), signature])
    for bad in (unsigned, forged, tampered, "not-a-jwt", token + "x"):
        with pytest.raises(Unauthorized):
            service.verify(bad)
