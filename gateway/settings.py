"""The gateway's one frozen settings object, read from ``FLOWGATE_*`` variables.

Every long-lived service receives the ``Settings`` it needs at start-up; nothing
reads the environment anywhere else. An invalid value stops start-up with an
error that names the variable; each value's parser and its bounds are in
``gateway.setting_parsers``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import setting_parsers as parse


class SettingsError(ValueError):
    """A ``FLOWGATE_*`` variable holds a value the gateway cannot use."""


def _setting(env: str, default: Any, parse: Callable[[str], Any], doc: str) -> Any:
    return field(default=default, metadata={"env": env, "parse": parse, "doc": doc})


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything configurable about one gateway process."""

    host: str = _setting("FLOWGATE_HOST", "127.0.0.1", parse.host, "Address the HTTP and MQTT listeners bind to.")
    http_port: int = _setting(
        "FLOWGATE_HTTP_PORT",
        8080,
        parse.int_between(-1, 65535),
        "HTTP port: REST API, SSE, WebSocket (`/ws`), MQTT over WebSocket (`/mqtt`). 0 picks a free port, -1 = off.",
    )
    mqtt_port: int = _setting(
        "FLOWGATE_MQTT_PORT",
        1883,
        parse.int_between(-1, 65535),
        "MQTT TCP port (3.1.1 and 5.0). 0 picks a free port, -1 = off.",
    )
    mqtt_inflight: int = _setting(
        "FLOWGATE_MQTT_INFLIGHT",
        1024,
        parse.int_between(1, 65535),
        "QoS 1/2 messages in flight to one MQTT client before further ones wait (in the outbound queue).",
    )
    mqtt_session_expiry: int = _setting(
        "FLOWGATE_MQTT_SESSION_EXPIRY",
        7 * 86400,
        parse.int_between(60, 366 * 86400),
        "Seconds an MQTT persistent session (clean session 0) and its queued messages outlive its last connection.",
    )
    data_dir: Path = _setting(
        "FLOWGATE_DATA_DIR",
        Path("./data"),
        Path,
        "Where the embedded NATS store, generated admin key and server secret live.",
    )
    nats_url: str | None = _setting(
        "FLOWGATE_NATS_URL", None, parse.nats_url, "NATS server(s) to use; unset starts an embedded `nats-server -js`."
    )
    nats_server_bin: str = _setting(
        "FLOWGATE_NATS_SERVER_BIN", "nats-server", str, "The `nats-server` binary for the embedded server."
    )
    nats_cpus: int = _setting(
        "FLOWGATE_NATS_CPUS",
        0,
        parse.int_between(0, 1024),
        "CPUs the embedded nats-server runs Go code on at once (its `GOMAXPROCS`); 0: the CPUs this process may "
        "use less one per worker (all of them when the workers leave none), unless `GOMAXPROCS` is set in the "
        "environment.",
    )
    admin_key: str | None = _setting(
        "FLOWGATE_ADMIN_KEY",
        None,
        parse.secret,
        "Admin API key; unset = generated on first start, stored in the data dir and printed once.",
    )
    secret_key: str | None = _setting(
        "FLOWGATE_SECRET_KEY",
        None,
        parse.secret,
        "Server secret that signs tokens and encrypts API keys; unset = generated in the data dir. Replicas must share it.",
    )
    max_message_bytes: int = _setting(
        "FLOWGATE_MAX_MESSAGE_BYTES",
        1024 * 1024,
        parse.int_between(64, 64 * 1024 * 1024),
        "Largest message payload accepted on any protocol.",
    )
    token_default_ttl: int = _setting(
        "FLOWGATE_TOKEN_DEFAULT_TTL",
        900,
        parse.int_between(10, 31 * 86400),
        "Token lifetime in seconds when `ttl` is not given.",
    )
    token_max_ttl: int = _setting(
        "FLOWGATE_TOKEN_MAX_TTL",
        86400,
        parse.int_between(10, 366 * 86400),
        "Longest token lifetime a client may ask for.",
    )
    retention_seconds: int = _setting(
        "FLOWGATE_RETENTION_SECONDS",
        86400,
        parse.int_between(1, 10 * 365 * 86400),
        "How long published messages stay replayable (SSE `Last-Event-ID`, WS `since`).",
    )
    retention_bytes: int = _setting(
        "FLOWGATE_RETENTION_BYTES",
        1024**3,
        parse.int_between(1024 * 1024, 2**50),
        "Size cap of the message stream; the oldest messages go first.",
    )
    dedupe_window_seconds: int = _setting(
        "FLOWGATE_DEDUPE_WINDOW_SECONDS",
        120,
        parse.int_between(1, 86400),
        "How long an `Idempotency-Key` is remembered.",
    )
    sse_heartbeat_seconds: float = _setting(
        "FLOWGATE_SSE_HEARTBEAT_SECONDS",
        15.0,
        parse.float_between(0.05, 3600),
        "Interval of the SSE heartbeat comment.",
    )
    outbound_queue_size: int = _setting(
        "FLOWGATE_OUTBOUND_QUEUE",
        1000,
        parse.int_between(1, 1_000_000),
        "Messages buffered per subscriber connection before it counts as a slow consumer.",
    )
    ws_ping_seconds: float = _setting(
        "FLOWGATE_WS_PING_SECONDS",
        20.0,
        parse.float_between(1, 3600),
        "Interval of WebSocket ping frames keeping idle connections alive; no pong within as long closes with 1011.",
    )
    token_expiry_notice_seconds: int = _setting(
        "FLOWGATE_TOKEN_EXPIRY_NOTICE",
        60,
        parse.int_between(1, 86400),
        "How long before a token expires a WebSocket gets `token_expiring` (at most half the token's lifetime).",
    )
    publish_timeout_seconds: float = _setting(
        "FLOWGATE_PUBLISH_TIMEOUT",
        3.0,
        parse.float_between(0.05, 60),
        "How long a publish waits for JetStream's acknowledgement before 503.",
    )
    shutdown_grace_seconds: float = _setting(
        "FLOWGATE_SHUTDOWN_GRACE", 5.0, parse.float_between(0, 300), "How long shutdown lets in-flight requests finish."
    )
    replicas: int = _setting(
        "FLOWGATE_STREAM_REPLICAS",
        1,
        parse.int_between(1, 5),
        "JetStream replicas for the gateway's streams and buckets (3 on a cluster).",
    )
    workers: int = _setting(
        "FLOWGATE_WORKERS",
        1,
        parse.workers,
        "Worker processes sharing the HTTP and MQTT ports, each a full replica (`auto`: one per CPU).",
    )
    reuse_port: bool = _setting(
        "FLOWGATE_REUSE_PORT",
        False,
        parse.boolean,
        "Bind the listeners with `SO_REUSEPORT` so that several processes share the ports (set for workers).",
    )
    otel_traces_exporter: str = _setting(
        "OTEL_TRACES_EXPORTER",
        "none",
        parse.exporter,
        "Tracing (OpenTelemetry): `none` (off), `otlp` (`pip install flowgate[tracing]`; the SDK reads the other "
        "`OTEL_*` variables), `console`, or `memory` (tests).",
    )
    metrics_tenants: int = _setting(
        "FLOWGATE_METRICS_TENANTS",
        20,
        parse.int_between(0, 10_000),
        "Users named in the per-user metric (the busiest first come; the rest counted as `_other`); 0: off.",
    )
    lame_duck_seconds: float = _setting(
        "FLOWGATE_LAME_DUCK_SECONDS",
        0.0,
        parse.float_between(0, 3600),
        "Lame duck: on SIGTERM, spread closing the live connections over this long (0: all at once), then the grace period.",
    )
    log_level: str = _setting("FLOWGATE_LOG_LEVEL", "info", parse.log_level, "debug, info, warning or error.")
    log_json: bool = _setting("FLOWGATE_LOG_JSON", False, parse.boolean, "Log JSON lines instead of console text.")
    billing_enabled: bool = _setting(
        "FLOWGATE_BILLING",
        True,
        parse.boolean,
        "Enforce plans: quotas and balance (402), rate limits (429), connection and size limits.",
    )
    plans_file: Path | None = _setting(
        "FLOWGATE_PLANS_FILE",
        None,
        parse.plans_file,
        "JSON file with the plans and unit prices; unset = built-in `free` and `pro`.",
    )
    billing_sync_interval: float = _setting(
        "FLOWGATE_BILLING_SYNC_INTERVAL",
        0.5,
        parse.float_between(0.05, 60),
        "Seconds between usage flushes to KV and rate-share messages between replicas.",
    )
    token_rate_per_address: float = _setting(
        "FLOWGATE_TOKEN_RATE_PER_ADDRESS",
        20.0,
        parse.float_between(0.01, 1e6),
        "`POST /token` requests per second per client address (burst: 10 s worth).",
    )
    token_rate_per_key: float = _setting(
        "FLOWGATE_TOKEN_RATE_PER_KEY",
        5.0,
        parse.float_between(0.01, 1e6),
        "`POST /token` requests per second per API key (burst: 10 s worth).",
    )

    https_port: int = _setting(
        "FLOWGATE_HTTPS_PORT",
        8443,
        parse.int_between(-1, 65535),
        "HTTPS and WSS port (everything the HTTP port serves), when a TLS certificate is set. -1 = off.",
    )
    mqtts_port: int = _setting(
        "FLOWGATE_MQTTS_PORT",
        8883,
        parse.int_between(-1, 65535),
        "MQTT over TLS port, when a TLS certificate is set. -1 = off.",
    )
    tls_cert_file: Path | None = _setting(
        "FLOWGATE_TLS_CERT_FILE",
        None,
        parse.optional_path,
        "PEM certificate chain (server certificate first) for the TLS listeners; reloaded when the file changes.",
    )
    tls_key_file: Path | None = _setting(
        "FLOWGATE_TLS_KEY_FILE", None, parse.optional_path, "PEM private key of the TLS certificate."
    )
    tls_client_ca_file: Path | None = _setting(
        "FLOWGATE_TLS_CLIENT_CA_FILE",
        None,
        parse.optional_path,
        "PEM CA certificates: MQTT-over-TLS clients must present a certificate they signed (HTTPS is unaffected).",
    )
    cors_origins: tuple[str, ...] = _setting(
        "FLOWGATE_CORS_ORIGINS",
        (),
        parse.origins,
        "Browser origins allowed to call the HTTP API and SSE and to open WebSockets "
        "(comma-separated `https://app.example.com`, or `*`); unset = no CORS, no Origin check.",
    )
    trusted_proxies: tuple[str, ...] = _setting(
        "FLOWGATE_TRUSTED_PROXIES",
        (),
        parse.networks,
        "Proxy addresses or CIDRs (comma-separated) whose `Forwarded`/`X-Forwarded-For` headers and PROXY protocol "
        "headers name the real client.",
    )
    webhook_allow_private: bool = _setting(
        "FLOWGATE_WEBHOOK_ALLOW_PRIVATE",
        False,
        parse.boolean,
        "Let webhooks call loopback, private and link-local addresses (local development and tests only).",
    )
    webhook_timeout_seconds: float = _setting(
        "FLOWGATE_WEBHOOK_TIMEOUT",
        10.0,
        parse.float_between(0.1, 120),
        "Seconds one webhook request may take before it is retried.",
    )
    webhook_retry_base_seconds: float = _setting(
        "FLOWGATE_WEBHOOK_RETRY_BASE",
        1.0,
        parse.float_between(0.01, 3600),
        "First webhook retry delay; doubles per attempt, with jitter (a `Retry-After` on 429/503 wins).",
    )
    webhook_retry_max_seconds: float = _setting(
        "FLOWGATE_WEBHOOK_RETRY_MAX",
        300.0,
        parse.float_between(0.01, 86400),
        "Longest delay between two webhook attempts.",
    )
    webhook_max_age_seconds: float = _setting(
        "FLOWGATE_WEBHOOK_MAX_AGE",
        86400.0,
        parse.float_between(0.1, 30 * 86400),
        "A message not delivered to a webhook this long after it was published goes to the webhook's dead-letter queue.",
    )
    webhook_sync_interval: float = _setting(
        "FLOWGATE_WEBHOOK_SYNC_INTERVAL",
        2.0,
        parse.float_between(0.05, 600),
        "Seconds between replicas' reads of the webhook list (created, paused or deleted elsewhere).",
    )

    presence_heartbeat_seconds: float = _setting(
        "FLOWGATE_PRESENCE_HEARTBEAT",
        2.0,
        parse.float_between(0.1, 60),
        "Seconds between a replica's presence heartbeats; a replica silent for three is gone with its clients.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every setting from ``environ`` (default ``os.environ``); keyword overrides win."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in overrides:
                continue
            raw = environ.get(f.metadata["env"])
            if raw is None:
                continue
            try:
                values[f.name] = f.metadata["parse"](raw.strip())
            except ValueError as exc:
                raise SettingsError(f"{f.metadata['env']}={raw!r}: {exc}") from None
        settings = cls(**values, **overrides)
        if settings.token_default_ttl > settings.token_max_ttl:
            raise SettingsError("FLOWGATE_TOKEN_DEFAULT_TTL must not exceed FLOWGATE_TOKEN_MAX_TTL")
        if (settings.tls_cert_file is None) != (settings.tls_key_file is None):
            raise SettingsError("FLOWGATE_TLS_CERT_FILE and FLOWGATE_TLS_KEY_FILE must be set together")
        if settings.tls_client_ca_file is not None and settings.tls_cert_file is None:
            raise SettingsError("FLOWGATE_TLS_CLIENT_CA_FILE needs FLOWGATE_TLS_CERT_FILE and FLOWGATE_TLS_KEY_FILE")
        if settings.tls_cert_file is not None:
            from gateway.tls import TlsError, check_files  # a broken file stops start-up with one line

            try:
                check_files(settings)
            except TlsError as exc:
                raise SettingsError(str(exc)) from None
        return settings

    @classmethod
    def documentation(cls) -> list[tuple[str, str, str]]:
        """(variable, default, description) for every setting, for the README table."""
        rows = []
        for f in dataclasses.fields(cls):
            default = "unset" if f.default is None or f.default == () else str(f.default)
            rows.append((f.metadata["env"], default, f.metadata["doc"]))
        return rows
