"""Pieces of the Python SDK and its command line that need no gateway: matching, error mapping, retry waits,
configuration precedence, bare JWTs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from flowgate_client import ApiError, PaymentRequired, RateLimited, Retry, ServerError, Unavailable
from flowgate_client.cli.config import ConfigError, Fallbacks, resolve
from flowgate_client.errors import error_from_body
from flowgate_client.subscription import topic_matches
from flowgate_client.tokens import token_from_jwt


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("a/b", "a/b", True),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("+/b", "a/b", True),
        ("#", "$sys/x", False),
        ("+/x", "$sys/x", False),
        ("$sys/#", "$sys/x", True),
        ("a/b", "a/c", False),
        ("a/+/c", "a//c", True),
    ],
)
def test_topic_matching_follows_mqtt(topic_filter: str, topic: str, matches: bool) -> None:
    assert topic_matches(topic_filter, topic) is matches


def test_errors_from_http_bodies_and_websocket_frames() -> None:
    body = {"error": {"code": "payment_required", "message": "spent", "limit": "balance", "quota": 5, "resets_at": "x"}}
    error = error_from_body(402, body)
    assert isinstance(error, PaymentRequired) and error.code == "payment_required" and error.message == "spent"
    assert (error.limit, error.quota, error.resets_at, error.used) == ("balance", 5, "x", None)
    frame = {"action": "error", "id": 3, "code": 429, "error": "rate_limited", "message": "slow", "retry_after": 0.5}
    limited = error_from_body(429, frame)
    assert isinstance(limited, RateLimited) and limited.code == "rate_limited" and limited.retry_after == 0.5
    unavailable = error_from_body(503, None, "2")
    assert isinstance(unavailable, Unavailable) and unavailable.retry_after == 2
    assert type(error_from_body(502, "<html>")) is ServerError
    assert type(error_from_body(418, {})) is ApiError and str(error_from_body(418, {})) == "418: HTTP 418"


def test_retry_waits_for_retry_after_within_its_cap() -> None:
    retry = Retry(delay=0.1, max_delay=3)
    assert retry.wait_for(0, "2") == 2
    assert retry.wait_for(0, "120") == 3
    assert 0 <= retry.wait_for(5, None) <= 3
    assert 0 <= retry.wait_for(0, "soon") <= 0.1  # not a number of seconds: the backoff


def test_configuration_precedence(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[default]\nurl = "http://profile"\napi_key = "pk"\napp = "papp"\n[other]\nurl = "http://other"\n'
    )
    env = {"FLOWGATE_CONFIG": str(config)}
    fallbacks = Fallbacks(url=lambda: "http://fallback", admin_key=lambda: "fallback-admin")
    from_profile = resolve({}, env, None, fallbacks)
    assert (from_profile.url, from_profile.api_key, from_profile.app, from_profile.admin_key) == (
        "http://profile",
        "pk",
        "papp",
        "fallback-admin",
    )
    from_env = resolve({}, {**env, "FLOWGATE_URL": "http://env/", "FLOWGATE_APP": "eapp"}, None, fallbacks)
    assert (from_env.url, from_env.app, from_env.api_key) == ("http://env", "eapp", "pk")
    from_flags = resolve(
        {"url": "http://flag", "api_key": "fk"}, {**env, "FLOWGATE_URL": "http://env"}, None, fallbacks
    )
    assert (from_flags.url, from_flags.api_key) == ("http://flag", "fk")
    assert resolve({}, env, "other", fallbacks).api_key is None
    assert resolve({}, {"FLOWGATE_CONFIG": str(tmp_path / "none.toml")}, None, fallbacks).url == "http://fallback"
    with pytest.raises(ConfigError, match="no profile"):
        resolve({}, {**env, "FLOWGATE_PROFILE": "missing"}, None, fallbacks)
    config.write_text('[default]\nurl = "http://x"\napi-key = "typo"\n')
    with pytest.raises(ConfigError, match="unknown keys"):
        resolve({}, env, None, fallbacks)
    config.write_text("[default\n")
    with pytest.raises(ConfigError, match="cannot read"):
        resolve({}, env, None, fallbacks)


def test_a_bare_jwt_gives_its_expiry_and_namespace() -> None:
    claims = base64.urlsafe_b64encode(json.dumps({"sub": "alice", "app": "web", "exp": 1234, "iat": 1000}).encode())
    token = token_from_jwt("h." + claims.decode().rstrip("=") + ".s")
    assert (token.expires_at, token.user_id, token.app, token.topic_prefix) == (1234, "alice", "web", "alice_web_")
