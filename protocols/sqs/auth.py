"""Who an SQS request is: its SigV4 signature checked against the API key's AWS secret.

The access key id names a Flow-Gate API key (``FGAK<key id>``); the key's
user is the SQS account (the ``<account>`` of queue URLs) and the credential
scope's region names the app, i.e. the namespace: a client configured with
``region_name="default"`` works on the queues a REST token for app
``default`` sees. The claims carry every permission (an API key can mint a
token for any of its user's apps anyway) and the key's own rate limit, so
billing and limits apply exactly as on the REST API. A deleted (revoked) key
or unknown id is ``InvalidClientTokenId``, checked on every request.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from auth.accounts import Accounts
from auth.permissions import Permissions
from auth.tokens import Claims
from gateway.errors import InvalidName, Unauthorized
from gateway.topics import Namespace, validate_ident
from protocols.sqs import sigv4
from protocols.sqs.errors import AwsError

CLAIMS_TTL = 900


async def authenticate(
    accounts: Accounts,
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Sequence[tuple[str, str]],
    header_map: Mapping[str, str],
    body: bytes,
) -> Claims:
    signed = sigv4.parse(header_map)
    sigv4.check_time(signed, datetime.now(UTC))
    try:
        user, key, secret = await accounts.aws_credentials(signed.access_key_id)
    except Unauthorized as exc:
        raise AwsError("InvalidClientTokenId", exc.message, status=403) from None
    sigv4.verify(
        secret,
        signed,
        method=method,
        raw_path=raw_path,
        raw_query=raw_query,
        headers=headers,
        header_map=header_map,
        body=body,
    )
    try:
        app = validate_ident(signed.region, "app")
    except InvalidName:
        raise AwsError(
            "InvalidParameterValue",
            f"The region {signed.region[:64]!r} names the app (namespace) and must be 1-64 characters of a-z, 0-9 and '-'",
        ) from None
    now = int(time.time())
    key_limit = None if key.rate is None else (key.rate, key.burst or 1)
    return Claims(
        Namespace(user.user_id, app),
        now,
        now + CLAIMS_TTL,
        f"sigv4-{key.id}",
        Permissions(),
        key.id if key_limit else None,
        key_limit,
    )
