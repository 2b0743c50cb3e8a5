"""The in-memory revocation state (``auth.revocations``) and the token claims it relies on, without I/O."""

from __future__ import annotations

import jwt
import pytest

from auth.permissions import Permissions
from auth.revocations import Revocations
from auth.tokens import ALGORITHM, Claims, TokenService
from gateway.errors import FlowGateError, Forbidden, Unauthorized
from gateway.topics import Namespace

KEY = b"k" * 32
MAX_TTL = 3600


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def setup() -> tuple[Clock, Revocations, TokenService]:
    clock = Clock()
    state = Revocations(MAX_TTL, clock=clock)
    return clock, state, TokenService(KEY, default_ttl=600, max_ttl=MAX_TTL, clock=clock, revocations=state)


def refusal(tokens: TokenService, token: str) -> tuple[int, str] | None:
    try:
        tokens.verify(token)
    except FlowGateError as exc:
        return exc.status, str(exc.details.get("reason", exc.code))
    return None


def test_tokens_record_their_key_and_millisecond_issue_time() -> None:
    clock, _, tokens = setup()
    clock.now = 1_000_000.1234
    token, claims = tokens.issue(Namespace("u1", "app"), key_id="00aa11bb22cc33dd")
    payload = jwt.decode(token, KEY, algorithms=[ALGORITHM], options={"verify_exp": False})
    assert payload["kid"] == "00aa11bb22cc33dd" and "klim" not in payload
    assert payload["iat_ms"] == 1_000_000_123 and payload["iat"] == 1_000_000
    assert tokens.verify(token) == claims


def test_old_tokens_without_kid_or_iat_ms_keep_working() -> None:
    clock, state, tokens = setup()
    old = jwt.encode(
        {"sub": "u1", "app": "app", "iat": 999_990, "exp": 1_000_500, "jti": "ab", "perm": None}, KEY, ALGORITHM
    )
    claims = tokens.verify(old)
    assert claims.key_id is None and claims.issued_ms == 999_990_000
    state.revoke_key("u1", "00aa11bb22cc33dd", int(clock.now * 1000))
    assert tokens.verify(old) == claims
    state.revoke_before("u1", int(clock.now * 1000))
    assert refusal(tokens, old) == (401, "token_revoked")


def test_disable_refuses_with_403_and_enable_restores() -> None:
    _, state, tokens = setup()
    token, _ = tokens.issue(Namespace("u1", "app"))
    state.set_user("u1", disabled=True)
    assert refusal(tokens, token) == (403, "user_disabled")
    state.set_user("u1", disabled=False)
    assert refusal(tokens, token) is None


def test_deleted_user_is_refused_and_a_recreated_one_does_not_inherit_old_tokens() -> None:
    clock, state, tokens = setup()
    old, _ = tokens.issue(Namespace("u1", "app"))
    state.delete_user("u1")
    state.revoke_before("u1", int(clock.now * 1000))  # what the deleting replica writes too
    assert refusal(tokens, old) == (401, "user_deleted")
    clock.now += 0.01
    state.set_user("u1", disabled=False)  # created again
    new, _ = tokens.issue(Namespace("u1", "app"))
    assert refusal(tokens, old) == (401, "token_revoked")
    assert refusal(tokens, new) is None


def test_jti_and_key_revocations_touch_only_their_tokens() -> None:
    clock, state, tokens = setup()
    first, claims = tokens.issue(Namespace("u1", "app"), key_id="1111111111111111")
    second, _ = tokens.issue(Namespace("u1", "app"), key_id="2222222222222222")
    other_user, _ = tokens.issue(Namespace("u2", "app"), key_id="3333333333333333")
    state.revoke_jti("u2", claims.jti, claims.expires_at)  # another user's jti: no effect on u1
    assert refusal(tokens, first) is None
    state.revoke_jti("u1", claims.jti, claims.expires_at)
    assert refusal(tokens, first) == (401, "token_revoked")
    assert (state.revoked_tokens("u1"), state.revoked_tokens("u2"), state.revoked_tokens("u9")) == (1, 1, 0)
    assert refusal(tokens, second) is None
    state.revoke_key("u1", "2222222222222222", int(clock.now * 1000))
    assert refusal(tokens, second) == (401, "key_revoked")
    assert refusal(tokens, other_user) is None


def test_revoke_before_covers_tokens_issued_until_then_only() -> None:
    clock, state, tokens = setup()
    before, _ = tokens.issue(Namespace("u1", "app"))
    state.revoke_before("u1", int(clock.now * 1000))
    clock.now += 0.002
    after, _ = tokens.issue(Namespace("u1", "app"))
    assert refusal(tokens, before) == (401, "token_revoked")
    assert refusal(tokens, after) is None


def test_revocations_are_forgotten_once_the_tokens_they_cover_expired() -> None:
    clock, state, _ = setup()
    state.revoke_before("u1", int(clock.now * 1000))
    state.revoke_key("u1", "1111111111111111", int(clock.now * 1000))
    state.revoke_jti("u1", "ab", clock.now + 10)
    clock.now += MAX_TTL + 1
    state.revoke_jti("u2", "cd", clock.now + 10)  # adding one sweeps the expired ones
    assert set(state._users) == {"u2"} and not state._keys
    state.revoke_jti("u3", "ef", clock.now - 1)  # already expired: nothing to keep
    assert "u3" not in state._users


def test_live_connections_are_ended_once_and_only_when_their_claims_are_refused() -> None:
    clock, state, tokens = setup()
    _, first = tokens.issue(Namespace("u1", "app"), key_id="1111111111111111")
    _, refreshed = tokens.issue(Namespace("u1", "app"), key_id="2222222222222222")
    _, bystander = tokens.issue(Namespace("u2", "app"))
    ended: list[tuple[str, FlowGateError]] = []
    conn = state.attach(first, lambda exc: ended.append(("conn", exc)))
    state.attach(bystander, lambda exc: ended.append(("bystander", exc)))
    conn.claims = refreshed  # a WebSocket refreshed its token
    state.revoke_key("u1", "1111111111111111", int(clock.now * 1000))
    assert ended == [] and state.live_count("u1") == 1
    state.set_user("u1", disabled=True)
    assert [(name, type(exc)) for name, exc in ended] == [("conn", Forbidden)]
    assert state.live_count("u1") == 0
    state.delete_user("u1")
    assert len(ended) == 1  # once
    # a connection set up while its user was being deleted is ended at once
    late: list[FlowGateError] = []
    handle = state.attach(refreshed, late.append)
    assert [type(exc) for exc in late] == [Unauthorized] and state.live_count("u1") == 0
    handle.detach()  # harmless after the fact


@pytest.mark.parametrize("claims_ms", [0, 5])
def test_claims_built_without_issue_time_are_not_refused_by_a_jti_only_state(claims_ms: int) -> None:
    _, state, _ = setup()
    state.revoke_jti("u1", "other", 2_000_000)
    state.check(Claims(Namespace("u1", "app"), 0, 2_000_000, "mine", Permissions(), issued_ms=claims_ms))
