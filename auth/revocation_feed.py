"""Revocation across replicas: JetStream KV feeds every replica's in-memory ``Revocations``.

Two buckets are watched (``gateway.bus.kv_watch``): ``fg_users`` (a user
disabled, enabled again or deleted) and ``fg_revocations``, written here:

- ``user.<user_id>`` → ``{"not_before_ms"}``: every token of the user issued
  up to then (``revoke-tokens``, and a deleted user, so that a user created
  again under the same id does not inherit old tokens);
- ``jti.<user_id>.<jti>`` → ``{"expires_at"}``: one token;
- ``key.<key_id>`` → ``{"user_id", "at_ms"}``: the tokens of a deleted API key.

The bucket's entries expire after the longest token lifetime
(``FLOWGATE_TOKEN_MAX_TTL``), when the tokens they cover have expired anyway;
each replica forgets them from memory on the same schedule. A change is applied
at once on the replica that made it and within milliseconds on the others,
which also end the live connections it refuses (``Revocations.attach``).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from auth.accounts import USERS_BUCKET, User
from auth.revocations import Revocations
from gateway.bus import Bucket, Bus
from gateway.bus.kv_watch import Change, KvWatch

REVOCATIONS_BUCKET = "fg_revocations"
TTL_MARGIN = 60  # seconds kept beyond the longest token lifetime (clock differences between replicas)


class RevocationFeed:
    def __init__(self, state: Revocations, users: Bucket, revocations: Bucket) -> None:
        self.state = state
        self._bucket = revocations
        self._watches = [KvWatch(users, self._user_changed), KvWatch(revocations, self._revocation_changed)]

    @classmethod
    async def open(cls, bus: Bus, state: Revocations) -> RevocationFeed:
        users = await bus.bucket(USERS_BUCKET)
        revocations = await bus.bucket(REVOCATIONS_BUCKET, ttl=state.max_ttl + TTL_MARGIN)
        feed = cls(state, users, revocations)
        for watch in feed._watches:
            await watch.start()
        return feed

    async def close(self) -> None:
        for watch in self._watches:
            await watch.stop()

    # -- writing (each applied here at once, and by the others through the watch) ---------------

    async def revoke_user_tokens(self, user_id: str) -> int:
        """Revoke every token of ``user_id`` issued until now; returns that moment in milliseconds."""
        now_ms = int(time.time() * 1000)
        await self._bucket.put(f"user.{user_id}", orjson.dumps({"not_before_ms": now_ms}))
        self.state.revoke_before(user_id, now_ms)
        return now_ms

    async def revoke_token(self, user_id: str, jti: str, expires_at: float | None = None) -> None:
        """Revoke one token of ``user_id``; without ``expires_at``, for the longest token lifetime."""
        expires_at = time.time() + self.state.max_ttl if expires_at is None else expires_at
        await self._bucket.put(f"jti.{user_id}.{jti}", orjson.dumps({"expires_at": expires_at}))
        self.state.revoke_jti(user_id, jti, expires_at)

    async def revoke_key(self, user_id: str, key_id: str) -> None:
        """Revoke every token issued from API key ``key_id`` (which was just deleted)."""
        now_ms = int(time.time() * 1000)
        await self._bucket.put(f"key.{key_id}", orjson.dumps({"user_id": user_id, "at_ms": now_ms}))
        self.state.revoke_key(user_id, key_id, now_ms)

    def user_changed(self, user: User) -> None:
        """A user record was written here: apply it without waiting for the watch."""
        self.state.set_user(user.user_id, disabled=user.disabled)

    async def user_deleted(self, user_id: str) -> None:
        """A user was deleted here: refuse its tokens now, and for good should the id be created again."""
        self.state.delete_user(user_id)
        await self.revoke_user_tokens(user_id)

    # -- the watches ------------------------------------------------------------------------------

    def _user_changed(self, change: Change) -> None:
        if change.value is None:
            self.state.delete_user(change.key)
            return
        record: dict[str, Any] = orjson.loads(change.value)
        self.state.set_user(change.key, disabled=bool(record.get("disabled")))

    def _revocation_changed(self, change: Change) -> None:
        if change.value is None:
            return  # revocations are never deleted; they expire
        kind, _, rest = change.key.partition(".")
        record: dict[str, Any] = orjson.loads(change.value)
        if kind == "user":
            self.state.revoke_before(rest, int(record["not_before_ms"]))
        elif kind == "jti":
            user_id, _, jti = rest.partition(".")
            self.state.revoke_jti(user_id, jti, float(record["expires_at"]))
        elif kind == "key":
            self.state.revoke_key(str(record["user_id"]), rest, int(record["at_ms"]))
