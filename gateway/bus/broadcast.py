"""Fire-and-forget core NATS messages between replicas (no JetStream, no acknowledgement).

For small, frequent, lossy coordination such as the billing guard's rate
share. Subjects live under ``fg.ctl.`` so they never touch the message stream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg

from gateway.bus.core import Bus
from gateway.bus.translate import nats_errors
from gateway.errors import Unavailable

CONTROL_ROOT = "fg.ctl"


async def broadcast(bus: Bus, name: str, data: bytes) -> None:
    """Send ``data`` to every replica listening on ``name``."""
    nc = bus.nc
    if not nc.is_connected:
        raise Unavailable("message bus unavailable")
    with nats_errors(f"broadcast {name}"):
        await nc.publish(f"{CONTROL_ROOT}.{name}", data)


async def listen(bus: Bus, name: str, handler: Callable[[bytes], None]) -> Callable[[], Awaitable[None]]:
    """Call ``handler`` with each message broadcast on ``name``; returns the coroutine function that stops it."""

    async def on_message(msg: Msg) -> None:
        handler(msg.data)

    with nats_errors(f"listen {name}"):
        subscription = await bus.nc.subscribe(f"{CONTROL_ROOT}.{name}", cb=on_message)

    async def stop() -> None:
        with nats_errors(f"stop listening {name}"):
            await subscription.unsubscribe()

    return stop
