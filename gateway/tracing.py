"""OpenTelemetry tracing, off by default: a span per publish and per delivery, ``traceparent`` through NATS.

``OTEL_TRACES_EXPORTER`` (a ``Settings`` field; ``none`` by default) turns it on: ``otlp`` (needs
``pip install flowgate[tracing]``; ``OTEL_EXPORTER_OTLP_ENDPOINT`` and the other standard
``OTEL_*`` variables are read by the SDK), ``console``, or ``memory`` (the SDK's in-memory exporter,
for tests that install their own provider). With tracing off nothing here is imported from
OpenTelemetry and the hot paths only test ``Publisher``'s and ``Hub``'s ``tracing is None``.

A publish (``Publisher.publish_then``: HTTP, WebSocket, MQTT) is a ``publish`` span with an ``admission``
child (the billing guard) and a ``store`` child that ends at JetStream's acknowledgement; the store
span's W3C ``traceparent`` travels in the message's NATS headers. Every replica whose subscribers
get the message records a ``deliver`` span in that trace (``Hub``), so one trace follows a message
from an HTTP publish to an MQTT, WebSocket, SSE or queue consumer on any replica. Log lines written
inside a span carry its ``trace_id`` and ``span_id`` (``gateway/logging.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from gateway.settings import Settings

log = logging.getLogger("flowgate.tracing")

TRACEPARENT = "traceparent"
EXPORTERS = ("none", "otlp", "console", "memory")


class Tracing:
    """The gateway's tracer, built once at start-up (``None`` stands for tracing off)."""

    def __init__(self, tracer: Any) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._tracer = tracer
        self._trace = trace
        self._context = context
        self._propagator = TraceContextTextMapPropagator()

    @classmethod
    def from_settings(cls, settings: Settings) -> Tracing | None:
        exporter = settings.otel_traces_exporter
        if exporter == "none":
            return None
        from opentelemetry import trace

        if exporter in ("otlp", "console"):
            _install_provider(exporter)
        return cls(trace.get_tracer("flowgate"))

    @contextmanager
    def publish(self, protocol: str, subject: str) -> Iterator[Any]:
        """The ``publish`` span of one message, current while the front end admits and sends it."""
        with self._tracer.start_as_current_span(
            "publish",
            kind=self._trace.SpanKind.PRODUCER,
            attributes={"flowgate.protocol": protocol, "messaging.destination.name": subject},
        ) as span:
            yield span

    @contextmanager
    def admission(self) -> Iterator[None]:
        with self._tracer.start_as_current_span("admission"):
            yield

    def store(self, headers: MutableMapping[str, str]) -> Any:
        """Start the ``store`` span (ended by the caller at the acknowledgement) and put its ``traceparent``
        into ``headers``."""
        span = self._tracer.start_span("store", kind=self._trace.SpanKind.CLIENT)
        self._propagator.inject(headers, context=self._trace.set_span_in_context(span))
        return span

    def stored(self, span: Any, error: Exception | None) -> None:
        if error is not None:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(error)))
        span.end()

    def deliver(self, traceparent: str, subject: str, seq: int, subscribers: int) -> None:
        """A ``deliver`` span in the trace of the message's publish (an instant: the hand-over to the sinks)."""
        parent = self._propagator.extract({TRACEPARENT: traceparent})
        span = self._tracer.start_span(
            "deliver",
            context=parent,
            kind=self._trace.SpanKind.CONSUMER,
            attributes={
                "messaging.destination.name": subject,
                "flowgate.seq": seq,
                "flowgate.subscribers": subscribers,
            },
        )
        span.end()


def _install_provider(exporter: str) -> None:
    """A tracer provider with a batch exporter, unless the process already has one."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider = TracerProvider(resource=Resource.create({"service.name": "flowgate"}))  # OTEL_SERVICE_NAME wins
    span_exporter: SpanExporter
    if exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise RuntimeError("OTEL_TRACES_EXPORTER=otlp needs `pip install flowgate[tracing]`") from exc
        span_exporter = OTLPSpanExporter()
    else:
        span_exporter = ConsoleSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    log.info("tracing on: OpenTelemetry %s exporter", exporter)


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span, in hex, if tracing is on and a span is current."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
