"""Token buckets on a fake clock: no sleeps, exact arithmetic."""

from __future__ import annotations

import pytest

from gateway.billing.limiter import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_burst_then_refusal_with_wait(clock: FakeClock) -> None:
    limiter = RateLimiter(clock)
    assert [limiter.take("u", 5, 10) for _ in range(10)] == [0.0] * 10
    wait = limiter.take("u", 5, 10)
    assert wait == pytest.approx(0.2)  # one token at 5/s
    assert limiter.take("u", 5, 10) == pytest.approx(0.2)  # a refusal takes nothing


def test_refills_at_the_rate_up_to_the_burst(clock: FakeClock) -> None:
    limiter = RateLimiter(clock)
    for _ in range(10):
        limiter.take("u", 5, 10)
    clock.advance(0.4)  # two tokens
    assert limiter.take("u", 5, 10) == 0.0
    assert limiter.take("u", 5, 10) == 0.0
    assert limiter.take("u", 5, 10) > 0
    clock.advance(3600)
    assert sum(1 for _ in range(20) if limiter.take("u", 5, 10) == 0.0) == 10


def test_keys_are_independent(clock: FakeClock) -> None:
    limiter = RateLimiter(clock)
    for _ in range(3):
        limiter.take("a", 1, 3)
    assert limiter.take("a", 1, 3) > 0
    assert limiter.take("b", 1, 3) == 0.0


def test_state_gives_the_header_values(clock: FakeClock) -> None:
    limiter = RateLimiter(clock)
    for _ in range(10):
        limiter.take("u", 2, 10)
    state = limiter.state("u", 2, 10)
    assert (state.limit, state.remaining) == (10, 0)
    assert state.retry_after == pytest.approx(0.5)
    assert state.reset == pytest.approx(5.0)  # 10 tokens at 2/s
    assert state.headers() == {
        "Retry-After": "1",
        "RateLimit-Limit": "10",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "5",
    }
    clock.advance(2.25)
    state = limiter.state("u", 2, 10)
    assert state.remaining == 4 and state.retry_after == 0.0


def test_give_back_and_charge(clock: FakeClock) -> None:
    limiter = RateLimiter(clock)
    limiter.take("u", 1, 2)
    limiter.take("u", 1, 2)
    limiter.give_back("u")
    assert limiter.take("u", 1, 2) == 0.0
    limiter.charge("u", 1, 2, 100)  # spent on other replicas: debt, floored at -burst
    assert limiter.take("u", 1, 2) == pytest.approx(3.0)
    clock.advance(3.0)
    assert limiter.take("u", 1, 2) == 0.0


def test_plan_change_keeps_the_level_and_caps_it(clock: FakeClock) -> None:
    limiter = RateLimiter(clock)
    limiter.take("u", 10, 100)
    assert limiter.state("u", 10, 5).remaining == 5  # a smaller plan: capped at its burst on refill
    clock.advance(1)
    assert limiter.state("u", 10, 5).remaining == 5


def test_sweep_forgets_full_buckets_only(clock: FakeClock) -> None:
    limiter = RateLimiter(clock)
    limiter.take("idle", 10, 10)
    for _ in range(10):
        limiter.take("busy", 1, 10)
    clock.advance(0.5)
    assert limiter.sweep() == 1  # "idle" refilled in 0.1 s; "busy" needs 10 s
    assert len(limiter) == 1
    assert limiter.take("busy", 1, 10) > 0


def test_a_token_carries_its_keys_rate_limit() -> None:
    from auth.tokens import TokenService
    from gateway.topics import Namespace

    service = TokenService(b"k" * 32, default_ttl=60, max_ttl=600)
    token, _ = service.issue(Namespace("alice", "app"), key_id="0123456789abcdef", key_limit=(2.5, 4))
    claims = service.verify(token)
    assert (claims.key_id, claims.key_limit) == ("0123456789abcdef", (2.5, 4))
    plain, _ = service.issue(Namespace("alice", "app"))
    assert service.verify(plain).key_limit is None
