"""Logging set-up: structlog over the standard library, console text or JSON lines.

Connection-scoped fields (connection id, user, protocol) are bound with
``structlog.contextvars`` by each front-end; secrets are never logged.
"""

from __future__ import annotations

import logging
import re

import structlog

from gateway.settings import Settings

_TOKEN_QUERY = re.compile(r"([?&]token=)[^&\s\"]+")


class RedactTokens(logging.Filter):
    """uvicorn logs WebSocket paths with their query string: hide ``?token=`` values."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("uvicorn"):
            message = record.getMessage()
            if "token=" in message:
                record.msg, record.args = _TOKEN_QUERY.sub(r"\1<redacted>", message), None
        return True


def _trace_ids(_: object, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """Add the current span's ``trace_id`` and ``span_id`` (tracing on, inside a span)."""
    from gateway.tracing import current_ids

    ids = current_ids()
    if ids is not None:
        event["trace_id"], event["span_id"] = ids
    return event


def configure(settings: Settings) -> None:
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if settings.otel_traces_exporter != "none":
        shared.append(_trace_ids)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if settings.log_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    handler.addFilter(RedactTokens())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for noisy in ("uvicorn.access", "nats"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
