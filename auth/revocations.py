"""What is refused right now, held in memory on every replica: no request pays a KV round trip.

``Revocations`` is plain state (no I/O, clock injected), fed by the JetStream
watcher in ``auth.revocation_feed``:

- users disabled (403) or deleted (401), from the users bucket;
- tokens revoked by ``jti`` (per user), every token of a user issued up to a
  moment (``not_before``, in milliseconds), and every token issued from a
  deleted API key: from the revocations bucket, each kept until the tokens it
  covers would have expired anyway (``max_ttl`` after it was made).

``TokenService.verify`` calls ``check`` on every use of a token, so every
front end refuses the next request. Live connections register themselves with
``attach`` (SSE streams, WebSockets, MQTT sessions): when a change refuses the
claims a connection holds, its ``on_revoked`` callback gets the error and ends
it in the protocol's own terms. Callbacks run synchronously in the watcher and
must not block.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from gateway.errors import FlowGateError, Forbidden, Unauthorized


class Claims(Protocol):
    """What a check reads of a token's claims (``auth.tokens.Claims``)."""

    @property
    def user_id(self) -> str: ...
    @property
    def jti(self) -> str: ...
    @property
    def issued_ms(self) -> int: ...
    @property
    def key_id(self) -> str | None: ...


OnRevoked = Callable[[FlowGateError], None]

log = logging.getLogger("flowgate.auth")


def user_deleted() -> Unauthorized:
    return Unauthorized("the token's user was deleted", details={"reason": "user_deleted"})


def user_disabled() -> Forbidden:
    return Forbidden("the user is disabled", details={"reason": "user_disabled"})


def token_revoked() -> Unauthorized:
    return Unauthorized("the token was revoked", details={"reason": "token_revoked"})


def key_revoked() -> Unauthorized:
    return Unauthorized("the API key was deleted", details={"reason": "key_revoked"})


class LiveHandle:
    """One live connection of a user; ``claims`` may be replaced (a refreshed token), ``detach`` when it ends."""

    __slots__ = ("_owner", "claims", "on_revoked")

    def __init__(self, owner: Revocations, claims: Claims, on_revoked: OnRevoked) -> None:
        self._owner = owner
        self.claims = claims
        self.on_revoked = on_revoked

    def detach(self) -> None:
        self._owner._detach(self)


@dataclass(slots=True)
class _UserState:
    disabled: bool = False
    deleted: bool = False
    not_before_ms: int = 0  # tokens issued at or before this moment are revoked
    not_before_until: float = 0.0  # when that revocation expires (wall-clock seconds)
    jtis: dict[str, float] = field(default_factory=dict)  # revoked jti -> when it expires


class Revocations:
    def __init__(self, max_ttl: int, *, clock: Callable[[], float] = time.time) -> None:
        self.max_ttl = max_ttl  # the longest token lifetime: how long a blanket revocation matters
        self._clock = clock
        self._users: dict[str, _UserState] = {}  # only users with something refused
        self._keys: dict[str, float] = {}  # deleted API key id -> when the revocation expires
        self._live: dict[str, set[LiveHandle]] = {}
        self._next_sweep = 0.0

    # -- the check, on every use of a token -------------------------------------------------

    def check(self, claims: Claims) -> None:
        """Raise ``Unauthorized`` (deleted, revoked) or ``Forbidden`` (disabled) when ``claims`` are refused."""
        state = self._users.get(claims.user_id)
        if state is not None:
            if state.deleted:
                raise user_deleted()
            if state.disabled:
                raise user_disabled()
            if claims.jti in state.jtis:
                raise token_revoked()
            if state.not_before_ms and claims.issued_ms <= state.not_before_ms:
                raise token_revoked()
        if claims.key_id is not None and claims.key_id in self._keys:
            raise key_revoked()

    def revoked_tokens(self, user_id: str) -> int:
        """How many single tokens of ``user_id`` are revoked now."""
        state = self._users.get(user_id)
        return 0 if state is None else len(state.jtis)

    def is_key_revoked(self, key_id: str) -> bool:
        """Whether API key ``key_id`` was deleted (within the longest token lifetime)."""
        return key_id in self._keys

    # -- live connections --------------------------------------------------------------------

    def attach(self, claims: Claims, on_revoked: OnRevoked) -> LiveHandle:
        """Register a live connection; ``on_revoked`` is called once if a change refuses its claims
        (at once when they were refused while the connection was being set up)."""
        handle = LiveHandle(self, claims, on_revoked)
        self._live.setdefault(claims.user_id, set()).add(handle)
        try:
            self.check(claims)
        except FlowGateError as exc:
            handle.detach()
            on_revoked(exc)
        return handle

    def _detach(self, handle: LiveHandle) -> None:
        handles = self._live.get(handle.claims.user_id)
        if handles is not None:
            handles.discard(handle)
            if not handles:
                del self._live[handle.claims.user_id]

    def live_count(self, user_id: str) -> int:
        return len(self._live.get(user_id, ()))

    def _enforce(self, user_id: str) -> None:
        """End every live connection of ``user_id`` whose claims are now refused."""
        for handle in list(self._live.get(user_id, ())):
            try:
                self.check(handle.claims)
            except FlowGateError as exc:
                log.info("ending a live connection of user %s: %s", user_id, exc.details.get("reason", exc.code))
                handle.detach()
                handle.on_revoked(exc)

    # -- changes (from the watcher, or applied at once by the replica that made them) ------------

    def set_user(self, user_id: str, *, disabled: bool) -> None:
        """The user exists (again), enabled or disabled."""
        state = self._users.get(user_id)
        if state is None:
            if not disabled:
                return
            state = self._users[user_id] = _UserState()
        state.deleted = False
        state.disabled = disabled
        self._forget_if_empty(user_id, state)
        self._enforce(user_id)

    def delete_user(self, user_id: str) -> None:
        state = self._users.setdefault(user_id, _UserState())
        state.deleted = True
        state.disabled = False
        self._enforce(user_id)

    def revoke_before(self, user_id: str, not_before_ms: int) -> None:
        """Every token of ``user_id`` issued at or before ``not_before_ms``."""
        until = not_before_ms / 1000 + self.max_ttl
        if until <= self._clock():
            return
        state = self._users.setdefault(user_id, _UserState())
        if not_before_ms > state.not_before_ms:
            state.not_before_ms, state.not_before_until = not_before_ms, until
        self._sweep()
        self._enforce(user_id)

    def revoke_jti(self, user_id: str, jti: str, expires_at: float) -> None:
        """One token of ``user_id``, until it would have expired."""
        if expires_at <= self._clock():
            return
        self._users.setdefault(user_id, _UserState()).jtis[jti] = expires_at
        self._sweep()
        self._enforce(user_id)

    def revoke_key(self, user_id: str, key_id: str, at_ms: int) -> None:
        """Every token issued from API key ``key_id`` (deleted at ``at_ms``)."""
        until = at_ms / 1000 + self.max_ttl
        if until <= self._clock():
            return
        self._keys[key_id] = until
        self._sweep()
        self._enforce(user_id)

    # -- expiry ---------------------------------------------------------------------------------

    def _sweep(self) -> None:
        """Forget revocations whose tokens have all expired (at most once a minute, when something is added)."""
        now = self._clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 60
        self._keys = {key: until for key, until in self._keys.items() if until > now}
        for user_id, state in list(self._users.items()):
            state.jtis = {jti: until for jti, until in state.jtis.items() if until > now}
            if state.not_before_until <= now:
                state.not_before_ms = state.not_before_until = 0
            self._forget_if_empty(user_id, state)

    def _forget_if_empty(self, user_id: str, state: _UserState) -> None:
        if not (state.disabled or state.deleted or state.jtis or state.not_before_ms):
            self._users.pop(user_id, None)
