"""AWS Signature Version 4, verified (sans-I/O: the caller supplies the secret and the clock).

``parse`` reads the ``Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
Signature=...`` header and the request time (``X-Amz-Date``, else ``Date``);
``verify`` rebuilds the canonical request exactly as AWS specifies (and botocore
signs): method, the URI-encoded path (encoded once more, as for every service
but S3), the sorted canonical query string, the signed headers (lower-case,
values trimmed and inner spaces collapsed), the signed header names and the
SHA-256 of the body; then the string to sign over the credential scope
``<date>/<region>/sqs/aws4_request`` and the HMAC chain of the secret. The
signature is compared in constant time. A request time more than 15 minutes
away from the server's clock is ``RequestExpired``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote

from protocols.sqs.errors import AwsError

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "sqs"
MAX_SKEW_SECONDS = 15 * 60
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_SPACES = re.compile(r"\s+")
_FIELD = re.compile(r"\s*(Credential|SignedHeaders|Signature)\s*=\s*([^,\s]*)\s*")


def missing_token(message: str = "Request is missing Authentication Token") -> AwsError:
    return AwsError("MissingAuthenticationToken", message, status=403)


def incomplete(message: str) -> AwsError:
    return AwsError("IncompleteSignature", message, status=400)


def mismatch(
    message: str = "The request signature we calculated does not match the signature you provided.",
) -> AwsError:
    return AwsError("SignatureDoesNotMatch", message, status=403)


@dataclass(frozen=True, slots=True)
class Signed:
    """What a request claims: who signed it, over which scope, headers and time."""

    access_key_id: str
    date: str  # YYYYMMDD of the credential scope
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    request_time: datetime
    amz_date: str  # the request time as signed (X-Amz-Date, or the Date header's text)

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def parse(headers: Mapping[str, str]) -> Signed:
    """The signature claims of a request with lower-case ``headers``; AWS's error if they are missing or malformed."""
    authorization = headers.get("authorization")
    if not authorization:
        raise missing_token()
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise incomplete(f"Unsupported AWS 'algorithm': {algorithm[:40]!r}; only {ALGORITHM} (SigV4) is accepted")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        match = _FIELD.fullmatch(part)
        if match is None:
            raise incomplete(
                f"Authorization header requires 'Credential', 'SignedHeaders' and 'Signature': {part[:60]!r}"
            )
        fields[match.group(1)] = match.group(2)
    for name in ("Credential", "SignedHeaders", "Signature"):
        if not fields.get(name):
            raise incomplete(f"Authorization header requires '{name}' parameter.")
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request" or not scope[0]:
        raise incomplete("Credential must have the form <access key id>/<date>/<region>/<service>/aws4_request")
    access_key_id, date, region, service = scope[:4]
    if service != SERVICE:
        raise mismatch(f"Credential should be scoped to correct service: '{SERVICE}'.")
    signed = tuple(fields["SignedHeaders"].split(";"))
    if "host" not in signed:
        raise mismatch("'Host' must be a signed header.")
    amz_date = headers.get("x-amz-date")
    if amz_date is not None:
        if "x-amz-date" not in signed:
            raise mismatch("'X-Amz-Date' must be a signed header.")
        try:
            when = datetime.strptime(amz_date, _AMZ_DATE).replace(tzinfo=UTC)
        except ValueError:
            raise incomplete(f"X-Amz-Date {amz_date[:40]!r} must have the form YYYYMMDD'T'HHMMSS'Z'") from None
    else:
        raw = headers.get("date")
        if raw is None or "date" not in signed:
            raise missing_token("Authorization needs a signed X-Amz-Date or Date header")
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            raise incomplete("Date header is not an HTTP date") from None
        amz_date = when.astimezone(UTC).strftime(_AMZ_DATE)
    if date != when.strftime("%Y%m%d"):
        raise mismatch(f"Date in Credential scope does not match YYYYMMDD from the request time: {date[:20]!r}")
    return Signed(access_key_id, date, region, service, signed, fields["Signature"], when, amz_date)


def check_time(signed: Signed, now: datetime) -> None:
    """``RequestExpired`` for a request signed more than 15 minutes away from ``now``."""
    skew = abs((now - signed.request_time).total_seconds())
    if skew > MAX_SKEW_SECONDS:
        raise AwsError(
            "RequestExpired",
            f"Request has expired: signed at {signed.amz_date}, server time {now.strftime(_AMZ_DATE)} "
            f"(more than {MAX_SKEW_SECONDS // 60} minutes apart).",
            status=400,
        )


def _canonical_path(raw_path: str) -> str:
    segments = [s for s in raw_path.split("/") if s not in ("", ".")]
    path = "/" + "/".join(segments)
    if raw_path.endswith("/") and segments:
        path += "/"
    return quote(path, safe="/~")


def _canonical_query(raw_query: str) -> str:
    pairs: list[tuple[str, str]] = []
    for item in raw_query.split("&") if raw_query else []:
        key, _, value = item.partition("=")
        pairs.append(
            (quote(unquote(key.replace("+", " ")), safe="-_.~"), quote(unquote(value.replace("+", " ")), safe="-_.~"))
        )
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def canonical_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Sequence[tuple[str, str]],
    signed_headers: Sequence[str],
    payload_hash: str,
) -> str:
    """AWS's canonical request; ``headers`` as received (lower-case names, repeated names allowed)."""
    values: dict[str, list[str]] = {}
    for name, value in headers:
        values.setdefault(name, []).append(_SPACES.sub(" ", value.strip()))
    lines = [f"{name}:{','.join(values.get(name, []))}" for name in signed_headers]
    return "\n".join(
        [
            method,
            _canonical_path(raw_path),
            _canonical_query(raw_query),
            *lines,
            "",
            ";".join(signed_headers),
            payload_hash,
        ]
    )


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def signature(secret: str, signed: Signed, canonical: str) -> str:
    to_sign = "\n".join(
        [ALGORITHM, signed.amz_date, signed.scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()]
    )
    key = _hmac(("AWS4" + secret).encode("utf-8"), signed.date)
    for part in (signed.region, signed.service, "aws4_request"):
        key = _hmac(key, part)
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def payload_hash(headers: Mapping[str, str], body: bytes) -> str:
    """The body's SHA-256 as signed; a declared ``x-amz-content-sha256`` must match the body."""
    actual = hashlib.sha256(body).hexdigest()
    declared = headers.get("x-amz-content-sha256")
    if declared is None or declared == "UNSIGNED-PAYLOAD":
        return actual if declared is None else declared
    if not hmac.compare_digest(declared.lower(), actual):
        raise mismatch("The provided 'x-amz-content-sha256' header does not match what was computed.")
    return declared


def verify(
    secret: str,
    signed: Signed,
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Sequence[tuple[str, str]],
    header_map: Mapping[str, str],
    body: bytes,
) -> None:
    """``SignatureDoesNotMatch`` unless ``signed.signature`` is the request's signature under ``secret``."""
    canonical = canonical_request(
        method, raw_path, raw_query, headers, signed.signed_headers, payload_hash(header_map, body)
    )
    expected = signature(secret, signed, canonical)
    if not hmac.compare_digest(expected.encode("ascii"), signed.signature.encode("ascii", "replace")):
        raise mismatch()
