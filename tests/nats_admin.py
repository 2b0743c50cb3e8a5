"""Direct NATS operations for tests that need to reach under the gateway."""

from __future__ import annotations

import nats


async def purge_messages(url: str, stream: str = "FG_MESSAGES") -> None:
    """Remove every message of the stream, as retention would."""
    nc = await nats.connect(url)
    try:
        await nc.jetstream().purge_stream(stream)
    finally:
        await nc.close()
