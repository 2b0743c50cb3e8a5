"""Users and their API keys, kept in JetStream KV so that every replica sees them.

Buckets: ``fg_users`` (``<user_id>`` → user record) and ``fg_keys``
(``id.<key_id>`` → key record, ``owner.<user_id>.<key_id>`` → index entry).
An API key reads ``fgk_<key_id>_<secret>``; the secret is stored encrypted
under the server secret (a later SigV4 check needs it back), never in plain
text, and compared in constant time. Deleting a key takes effect at once: every
token request reads the record.

Each key made since SQS support also has an AWS credential pair for SigV4
clients: the access key id ``FGAK<KEY ID IN UPPER CASE>`` (20 characters, like
AWS's; it names the key, so no index is needed) and a secret access key of its
own, stored sealed like the key's secret. Older keys have no pair
(``sealed_aws_secret`` is absent) and keep working for everything else.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from auth.revocations import user_disabled
from auth.secrets import ServerSecrets
from gateway.bus import Bucket, Bus
from gateway.errors import BadRequest, Conflict, NotFound, Unauthorized
from gateway.topics import validate_ident

USERS_BUCKET = "fg_users"
KEYS_BUCKET = "fg_keys"
KEY_PREFIX = "fgk_"
ACCESS_KEY_PREFIX = "FGAK"
_ACCESS_KEY_FORMAT = re.compile(r"FGAK([0-9A-F]{16})")
_KEY_FORMAT = re.compile(r"fgk_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})")
MAX_KEY_NAME = 100


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class User:
    user_id: str
    plan: str = "free"
    disabled: bool = False
    created_at: str = field(default_factory=now_iso)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> User:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ApiKey:
    id: str
    user_id: str
    name: str
    created_at: str
    sealed_secret: str
    rate: float | None = None  # the key's own publish rate limit (with ``burst``), within the plan's
    burst: int | None = None
    sealed_aws_secret: str | None = None  # the SigV4 secret access key, sealed; None for keys made before SQS

    @property
    def access_key_id(self) -> str | None:
        return None if self.sealed_aws_secret is None else ACCESS_KEY_PREFIX + self.id.upper()

    def public(self) -> dict[str, Any]:
        view: dict[str, Any] = {"id": self.id, "name": self.name, "created_at": self.created_at}
        if self.access_key_id is not None:
            view["access_key_id"] = self.access_key_id
        if self.rate is not None:
            view["rate_limit"] = {"rate": self.rate, "burst": self.burst}
        return view


class Accounts:
    def __init__(self, users: Bucket, keys: Bucket, secrets_: ServerSecrets) -> None:
        self._users = users
        self._keys = keys
        self._secrets = secrets_

    @classmethod
    async def open(cls, bus: Bus, secrets_: ServerSecrets) -> Accounts:
        return cls(await bus.bucket(USERS_BUCKET), await bus.bucket(KEYS_BUCKET), secrets_)

    # -- users -----------------------------------------------------------------------

    async def create_user(self, user_id: str, plan: str = "free") -> User:
        validate_ident(user_id, "user_id")
        user = User(user_id=user_id, plan=plan)
        try:
            await self._users.create(user_id, orjson.dumps(user.to_json()))
        except Conflict:
            raise Conflict(f"user {user_id!r} already exists") from None
        return user

    async def get_user(self, user_id: str) -> User:
        entry = await self._users.get(user_id)
        if entry is None:
            raise NotFound(f"no user {user_id!r}")
        return User.from_json(orjson.loads(entry.value))

    async def list_users(self) -> list[User]:
        users = []
        for key in sorted(await self._users.keys()):
            entry = await self._users.get(key)
            if entry is not None:
                users.append(User.from_json(orjson.loads(entry.value)))
        return users

    async def update_user(self, user_id: str, changes: dict[str, Any]) -> User:
        """Apply ``changes`` with compare-and-set, retrying when another replica wrote first."""
        for _ in range(10):
            entry = await self._users.get(user_id)
            if entry is None:
                raise NotFound(f"no user {user_id!r}")
            data = orjson.loads(entry.value)
            data.update(changes)
            user = User.from_json(data)
            try:
                await self._users.update(user_id, orjson.dumps(user.to_json()), entry.revision)
            except Conflict:
                continue
            return user
        raise Conflict(f"user {user_id!r} is being changed concurrently; retry")

    async def delete_user(self, user_id: str) -> None:
        await self.get_user(user_id)
        for key in await self.list_keys(user_id):
            await self.delete_key(user_id, key.id)
        await self._users.delete(user_id)

    # -- API keys ---------------------------------------------------------------------

    async def create_key(
        self, user_id: str, name: str, *, rate: float | None = None, burst: int | None = None
    ) -> tuple[ApiKey, str]:
        """A new key for ``user_id``; returns the record and the key value, which is never shown again.

        ``rate``/``burst``: the key's own publish rate limit, applied on top of the user's plan.
        """
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_KEY_NAME:
            raise BadRequest(f"key name must be 1-{MAX_KEY_NAME} characters")
        await self.get_user(user_id)
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        sealed = self._secrets.encrypt(secret.encode(), key_id.encode())
        aws_secret = secrets.token_urlsafe(30)  # 40 characters, as AWS's
        sealed_aws = self._secrets.encrypt(aws_secret.encode(), _aws_aad(key_id))
        record = ApiKey(
            key_id, user_id, name, now_iso(), sealed, rate, None if rate is None else burst or 1, sealed_aws
        )
        await self._keys.create(f"id.{key_id}", orjson.dumps(asdict(record)))
        await self._keys.put(f"owner.{user_id}.{key_id}", b"")
        return record, f"{KEY_PREFIX}{key_id}_{secret}"

    async def list_keys(self, user_id: str) -> list[ApiKey]:
        keys = []
        for index in await self._keys.keys(f"owner.{user_id}.*"):
            record = await self._get_key(index.rsplit(".", 1)[1])
            if record is not None:
                keys.append(record)
        return sorted(keys, key=lambda k: k.created_at)

    async def delete_key(self, user_id: str, key_id: str) -> None:
        record = await self._get_key(key_id) if re.fullmatch(r"[0-9a-f]{16}", key_id) else None
        if record is None or record.user_id != user_id:
            raise NotFound(f"no key {key_id!r}")
        await self._keys.delete(f"id.{key_id}")
        await self._keys.delete(f"owner.{user_id}.{key_id}")

    async def _get_key(self, key_id: str) -> ApiKey | None:
        entry = await self._keys.get(f"id.{key_id}")
        return None if entry is None else ApiKey(**orjson.loads(entry.value))

    async def key_secret(self, key_id: str) -> tuple[ApiKey, str] | None:
        """A key's record and decrypted secret (for signature schemes such as SigV4)."""
        record = await self._get_key(key_id)
        if record is None:
            return None
        return record, self._secrets.decrypt(record.sealed_secret, key_id.encode()).decode()

    def aws_pair(self, record: ApiKey) -> dict[str, str]:
        """``access_key_id`` and ``secret_access_key`` of a key, for showing once when it is made; {} if it has none."""
        if record.sealed_aws_secret is None or record.access_key_id is None:
            return {}
        secret = self._secrets.decrypt(record.sealed_aws_secret, _aws_aad(record.id)).decode()
        return {"access_key_id": record.access_key_id, "secret_access_key": secret}

    async def aws_credentials(self, access_key_id: str) -> tuple[User, ApiKey, str]:
        """The active user, key and secret access key of an AWS access key id; ``Unauthorized`` otherwise."""
        match = _ACCESS_KEY_FORMAT.fullmatch(access_key_id or "")
        record = await self._get_key(match.group(1).lower()) if match else None
        if record is None or record.sealed_aws_secret is None:
            raise Unauthorized("The security token included in the request is invalid.")
        try:
            user = await self.get_user(record.user_id)
        except NotFound:
            raise Unauthorized("The security token included in the request is invalid.") from None
        if user.disabled:
            raise Unauthorized("user is disabled")
        secret = self._secrets.decrypt(record.sealed_aws_secret, _aws_aad(record.id)).decode()
        return user, record, secret

    async def authenticate(self, api_key: str) -> tuple[User, ApiKey]:
        """The active user and key an API key value belongs to; ``Unauthorized`` otherwise."""
        match = _KEY_FORMAT.fullmatch(api_key or "")
        found = await self.key_secret(match.group(1)) if match else None
        if match is None or found is None:
            raise Unauthorized("invalid API key")
        record, secret = found
        if not hmac.compare_digest(secret.encode(), match.group(2).encode()):
            raise Unauthorized("invalid API key")
        try:
            user = await self.get_user(record.user_id)
        except NotFound:
            raise Unauthorized("invalid API key") from None
        if user.disabled:
            raise user_disabled()
        return user, record


def _aws_aad(key_id: str) -> bytes:
    return f"{key_id}:aws".encode()
