"""Translation of nats-py exceptions into the gateway's errors.

Only modules of ``gateway.bus`` use this; nats-py errors never leave the package.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import nats.errors
import nats.js.errors

from gateway.errors import BadRequest, Conflict, FlowGateError, NotFound, PayloadTooLarge, Unavailable


@contextmanager
def nats_errors(doing: str) -> Iterator[None]:
    """Run a bus operation, re-raising nats-py failures as ``FlowGateError``."""
    try:
        yield
    except FlowGateError:
        raise
    except nats.js.errors.KeyWrongLastSequenceError as exc:
        raise Conflict(f"{doing}: changed concurrently") from exc
    except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError, nats.js.errors.NotFoundError) as exc:
        raise NotFound(f"{doing}: not found") from exc
    except nats.errors.MaxPayloadError as exc:
        raise PayloadTooLarge(f"{doing}: larger than the NATS server's max_payload") from exc
    except nats.js.errors.BadRequestError as exc:
        if exc.err_code == 10071:  # wrong last sequence on a plain stream
            raise Conflict(f"{doing}: changed concurrently") from exc
        raise BadRequest(f"{doing}: {exc.description}") from exc
    except (TimeoutError, nats.errors.Error, ConnectionError, OSError) as exc:
        raise Unavailable(f"{doing}: message bus unavailable") from exc
