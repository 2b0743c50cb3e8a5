"""Fast batches: one event-loop iteration's acknowledged publishes stored with a few acknowledgements, not one each.

JetStream's fast batch publishing (nats-server 2.14 and later, a stream with
``allow_batched``) needs no headers: each message of a batch carries the reply
subject ``<inbox>.<batch id>.<flow>.fail.<n>.<op>.$FI`` (n counts from 1; op 0
starts the batch, 1 appends, 2 commits with this last message). The server
stores each message as it arrives and answers only the start
(``{"type":"ack","seq":0,"msgs":F}``), every F-th message
(``{"type":"ack","seq":n}``) and the commit (the publish acknowledgement with
``"count"``). In gap mode ``fail`` an acknowledgement of n means messages 1..n
are stored, so a whole burst costs the gateway two or three parsed
acknowledgements instead of one per message. Acknowledgements of batched
messages carry no stream sequence (``STORED``): only publishers that do not
report one (``Bus.outlet(batched=True)``) are batched.

A burst is collected while the event loop runs callbacks and sent at the end of
the iteration (``call_soon``), before the connection's flusher writes it. Every
publish of the bus made meanwhile joins the burst in its place, so the stream
keeps the order in which the gateway published. A burst of one message is an
ordinary acknowledged publish.

Each batched message is tracked by its token like any other publish (deadline,
disconnect), so only the acknowledgement differs. A batch the server refuses or
cuts short (a stream without ``allow_batched``, a leader change) has its
unstored messages sent again one by one (``Retry``), or failed when the bus
will not retry.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson
from nats.aio.client import Client

from gateway.bus.acks import AckInbox, Pending, PubAck, Retry, Settle, settle
from gateway.bus.outgoing import append
from gateway.errors import FlowGateError, Unavailable

log = logging.getLogger("flowgate.bus")

FLOW = 500  # messages between two of the server's acknowledgements (nats-server caps it at 500)
MAX_BATCH = 1000  # messages per batch; a longer burst is sent as several
STORED = PubAck(0, False)  # stored in a batch: the server reports no stream sequence per message
_ERR_NOT_ENABLED = 10205  # the stream has no allow_batched (changed under us): stop batching

Member = tuple[bytes, bytes, bytes, Settle]  # (HPUB head, header block, body, the publish's settle: never a future)


def acked_command(head: bytes, reply: bytes, block: bytes, body: bytes) -> bytes:
    """``HPUB <subject> <reply> <header size> <total size>`` with its header block and body."""
    size = len(block)
    return b"%b%b %d %d\r\n%b%b\r\n" % (head, reply, size, size + len(body), block, body)


class _Batch:
    """One batch sent: its members in batch order, how many are known stored, and its token.

    The token stands for the whole batch among the bus's pending publishes: one
    deadline, and the disconnect that fails them all, reach every member through it.
    """

    __slots__ = ("members", "reply", "stored", "token")

    def __init__(self, reply: bytes, members: list[Member]) -> None:
        self.reply = reply  # the reply subject up to the message number: b"<inbox>.<id>.<flow>.fail."
        self.members = members
        self.stored = 0
        self.token = 0


class FastBatches:
    """The burst being collected, and the batches sent and not yet committed by the server."""

    __slots__ = ("_acks", "_batches", "_burst", "_ids", "_inbox", "_nc", "_retry", "_root", "_track", "enabled")

    def __init__(self, acks: AckInbox, track: Callable[[Pending], int], retry: Retry) -> None:
        self.enabled = False
        self._acks = acks
        self._track = track  # a token and a deadline, as for any publish
        self._retry = retry
        self._nc: Client | None = None
        self._inbox = b""  # b"<inbox>.": every acknowledgement of the bus comes under it
        self._root = secrets.token_hex(6).encode()  # batch ids are <root><n>: unique on the server, not only here
        self._ids = itertools.count(1)
        self._burst: list[bytes | Member] = []
        self._batches: dict[bytes, _Batch] = {}

    def start(self, nc: Client, inbox: str) -> None:
        """Batch from now on, on ``nc``, with replies under ``inbox``."""
        self._nc = nc
        self._inbox = (inbox + ".").encode()
        self.enabled = True

    @property
    def collecting(self) -> bool:
        """A burst is open: every publish of the bus joins it, to keep its place in the stream."""
        return bool(self._burst)

    def add(self, head: bytes, block: bytes, body: bytes, then: Settle) -> bool:
        """An acknowledged publish that may be batched; True when the bus wants a ``drain()`` now."""
        burst = self._burst
        if not burst:
            asyncio.get_running_loop().call_soon(self.send)
        burst.append((head, block, body, then))
        return len(burst) >= MAX_BATCH and self.send()

    def add_command(self, command: bytes) -> bool:
        """Any other publish, encoded, while a burst is open: it is sent in its place."""
        burst = self._burst
        burst.append(command)
        return len(burst) >= MAX_BATCH and self.send()

    def send(self) -> bool:
        """Send the burst, its batchable publishes as one batch (or as they are, when only one), in one
        append to the connection's buffer; True when the bus wants a ``drain()`` now."""
        burst, self._burst = self._burst, []
        nc = self._nc
        if not burst or nc is None:
            return False
        members = [item for item in burst if not isinstance(item, bytes)]
        batch = self._open(members) if len(members) > 1 else None
        commands: list[bytes] = []
        body_size = n = 0
        for item in burst:
            if isinstance(item, bytes):
                commands.append(item)
                body_size += len(item)  # (nats-py's statistics: the whole command, its body not known here)
                continue
            head, block, body, then = item
            body_size += len(body)
            if batch is None:  # a single one: an ordinary publish, acknowledged on its own
                token, command = self._ordinary(head, block, body, then)
                self._acks.frames[token] = command  # sent again if no stream takes it (``Bus._retry``)
            else:
                n += 1
                op = 0 if n == 1 else 2 if n == len(members) else 1  # start, append, commit
                size = len(block)  # (``acked_command`` with its reply subject, in one formatting)
                command = b"%b%b%d.%d.$FI %d %d\r\n%b%b\r\n" % (
                    head,
                    batch.reply,
                    n,
                    op,
                    size,
                    size + len(body),
                    block,
                    body,
                )
            commands.append(command)
        return append(nc, b"".join(commands), body_size, len(commands))

    def _open(self, members: list[Member]) -> _Batch:
        """A new batch for ``members``, under a new id, tracked by one token."""
        batch_id = b"%s%d" % (self._root, next(self._ids))
        batch = self._batches[batch_id] = _Batch(b"%b%b.%d.fail." % (self._inbox, batch_id, FLOW), members)
        batch.token = self._track(partial(self._failed, batch_id))
        return batch

    def _failed(self, batch_id: bytes, ack: PubAck | None, error: FlowGateError | None) -> None:
        """The batch's token failed (its deadline passed, the connection dropped): so do its unsettled members."""
        batch = self._batches.pop(batch_id, None)
        if batch is not None:
            for _, _, _, then in batch.members[batch.stored :]:
                settle(then, None, error or Unavailable("message bus did not acknowledge in time; retry"))

    def on_reply(self, subject: bytes, body: bytes, headers: bytes | None) -> None:
        """A message for a batch (``AckInbox.on_message`` hands over the subjects that are not a token)."""
        rest = subject[len(self._inbox) :]
        batch_id = rest[: rest.find(b".")]
        batch = self._batches.get(batch_id)
        if batch is None:
            return  # settled, failed, or not ours
        if not body:  # no responders: no stream took it (a stream without a leader); none of it is stored
            self._resend(batch_id, batch, f"no stream accepted the batch ({headers[:40] if headers else b''!r})")
            return
        try:
            reply: dict[str, Any] = orjson.loads(body)
        except orjson.JSONDecodeError:
            log.warning("unreadable batch acknowledgement from JetStream: %r", body[:100])
            return
        error = reply.get("error")
        if error is not None:
            if error.get("err_code") == _ERR_NOT_ENABLED:
                self.enabled = False
                log.warning("stream has no allow_batched any more: publishing one acknowledgement per message")
            self._resend(batch_id, batch, str(error.get("description", "batch refused by JetStream")))
            return
        count = reply.get("count")
        if count is not None:  # the commit: messages 1..count are stored, any later one is not
            self._stored(batch, int(count))
            self._resend(batch_id, batch, "batch ended before this message was stored")
            return
        if reply.get("type") == "ack":
            self._stored(batch, int(reply.get("seq", 0)))
        # "gap" and "err" events: the commit that ends the batch says what was stored

    @staticmethod
    def _stored(batch: _Batch, upto: int) -> None:
        members = batch.members
        upto = min(upto, len(members))
        for i in range(batch.stored, upto):
            try:  # (``settle`` for a callback, inlined: one call per message)
                members[i][3](STORED, None)
            except Exception:  # a bug in a callback: the other acknowledgements still go through
                log.exception("acknowledgement callback failed")
        batch.stored = max(batch.stored, upto)

    def _resend(self, batch_id: bytes, batch: _Batch, why: str) -> None:
        """Forget the batch; send its members not known stored again one by one (or fail them)."""
        del self._batches[batch_id]
        self._acks.pending.pop(batch.token, None)
        for head, block, body, then in batch.members[batch.stored :]:
            token, command = self._ordinary(head, block, body, then)
            if not self._retry(token, then, command):
                self._acks.pending.pop(token, None)
                settle(then, None, Unavailable(f"message not stored: {why}; retry"))

    def _ordinary(self, head: bytes, block: bytes, body: bytes, then: Pending) -> tuple[int, bytes]:
        """A publish acknowledged on its own, as ``Outlet.publish_then`` sends it: its token and command."""
        token = self._track(then)
        return token, acked_command(head, self._inbox + b"%d" % token, block, body)

    def forget(self) -> None:
        """The connection dropped: its publishes, batches included, were failed (``AckInbox.fail_all``)."""
        self._batches.clear()
