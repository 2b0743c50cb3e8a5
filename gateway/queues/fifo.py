"""FIFO queues: one batch in flight per message group, in order; message ids and sequence numbers.

A FIFO queue is a queue stream like any other (a 5-minute duplicate window
makes JetStream drop a repeated deduplication id, answering with the first
message's sequence, from which the message id is derived, so a duplicate send
gets the first message's id and stores nothing). What the pull consumer does
not know is the group rule; each group's state in the ``fg_fifo_groups``
bucket (compare-and-set, so replicas agree) says which of its messages are in
flight (``b``) and until when (``u``), and which later ones were turned away
while it was busy (``w``). ``admit`` decides, per pulled message, to deliver it
or to hand it back (not counted as a receive) for later:

- while a batch is in flight, the group's other messages wait until it expires;
- once it expired, only its own messages may come again (they come first);
- a message later than one that was turned away waits for that one.

Deleting (or dead-lettering) a message takes it out of its group's batch; the
key ``<queue id>.m.<seq>`` remembers a delivered message's group for that.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson

from gateway.bus import Bucket
from gateway.bus.queues import Pulled
from gateway.errors import Conflict

BUCKET = "fg_fifo_groups"
TTL_SECONDS = 15 * 86400
DEDUP_WINDOW_SECONDS = 300
NAME_SUFFIX = ".fifo"
GROUP_HEADER = "Fg-Group"
DEDUP_HEADER = "Fg-Dedup"
RETRY_SECONDS = 0.2  # how soon a message that waited for an earlier one is looked at again
RECHECK_SECONDS = 1.0  # how soon a message of a busy group is looked at again (its batch may be deleted)
_ID_SPACE = uuid.UUID("6f1c9b3e-4d52-4b8e-9d0e-5a7c2f1e8b40")


def message_id(queue_id: str, seq: int) -> str:
    """A FIFO message's id: derived from where it is stored, so a duplicate send can answer it."""
    return str(uuid.uuid5(_ID_SPACE, f"{queue_id}.{seq}"))


def sequence_number(seq: int) -> str:
    return f"{seq:020d}"


def content_dedup_id(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _group_key(queue_id: str, group: str) -> str:
    return f"{queue_id}.g.{hashlib.sha256(group.encode('utf-8')).hexdigest()[:32]}"


@dataclass(slots=True)
class _State:
    batch: list[int] = field(default_factory=list)
    until_ms: int = 0
    waiting: list[int] = field(default_factory=list)

    @classmethod
    def load(cls, raw: bytes | None) -> _State:
        if not raw:
            return cls()
        doc = orjson.loads(raw)
        return cls(list(doc.get("b", [])), int(doc.get("u", 0)), list(doc.get("w", [])))

    def dump(self) -> bytes:
        return orjson.dumps({"b": self.batch, "u": self.until_ms, "w": self.waiting})

    @property
    def empty(self) -> bool:
        return not self.batch and not self.waiting


@dataclass(frozen=True, slots=True)
class Admission:
    deliver: list[Pulled]
    hand_back: list[tuple[Pulled, float]]  # with the delay (seconds) before it may come again


class FifoGroups:
    def __init__(self, bucket: Bucket, clock: Callable[[], float] = time.time) -> None:
        self._bucket = bucket
        self._clock = clock

    async def _change(self, key: str, change: Callable[[_State], _State | None]) -> _State | None:
        """Apply ``change`` with compare-and-set (``None`` from it: leave the state alone)."""
        for _ in range(20):
            entry = await self._bucket.get(key)
            state = _State.load(None if entry is None else entry.value)
            new = change(state)
            if new is None:
                return state
            try:
                if entry is None:
                    if not new.empty:
                        await self._bucket.create(key, new.dump())
                elif new.empty:
                    await self._bucket.delete(key)  # a race here only costs a recreated empty state
                else:
                    await self._bucket.update(key, new.dump(), entry.revision)
            except Conflict:
                continue
            return new
        raise Conflict("a message group changed concurrently; retry")

    async def admit(self, queue_id: str, pulled: Sequence[Pulled], visibility: int) -> Admission:
        groups: dict[str, list[Pulled]] = {}
        for message in pulled:
            groups.setdefault(_group_key(queue_id, message.headers.get(GROUP_HEADER, "")), []).append(message)
        results = await asyncio.gather(*(self._admit_group(queue_id, k, m, visibility) for k, m in groups.items()))
        deliver = sorted((m for r in results for m in r.deliver), key=lambda m: m.ref.stream_seq)
        return Admission(deliver, [h for r in results for h in r.hand_back])

    async def _admit_group(self, queue_id: str, key: str, messages: list[Pulled], visibility: int) -> Admission:
        decided: list[Admission] = []

        def change(state: _State) -> _State:
            now = int(self._clock() * 1000)
            busy = bool(state.batch) and now < state.until_ms
            expired = bool(state.batch) and not busy
            first_waiting = min(state.waiting) if state.waiting else None
            deliver: list[Pulled] = []
            delivered: set[int] = set()
            back: list[tuple[Pulled, float]] = []
            for message in sorted(messages, key=lambda m: m.ref.stream_seq):
                seq = message.ref.stream_seq
                if busy and seq not in state.batch:
                    wait = min(RECHECK_SECONDS, (state.until_ms - now) / 1000)
                elif expired and (seq not in state.batch or any(s < seq and s not in delivered for s in state.batch)):
                    wait = RETRY_SECONDS  # the expired batch comes again first, in order
                elif first_waiting is not None and seq > first_waiting and first_waiting not in delivered:
                    wait = RETRY_SECONDS  # an earlier message of the group is waiting
                elif back:
                    wait = RETRY_SECONDS  # never past one that has to wait
                else:
                    deliver.append(message)
                    delivered.add(seq)
                    continue
                back.append((message, wait))
            decided.clear()
            decided.append(Admission(deliver, back))
            unfinished = state.batch if expired and deliver else []  # an expired batch's rest comes again first
            waiting = sorted({*state.waiting, *unfinished, *(m.ref.stream_seq for m, _ in back)} - delivered)
            if deliver:
                return _State(sorted(delivered), now + visibility * 1000, waiting)
            return _State(state.batch, state.until_ms, waiting)

        await self._change(key, change)
        admission = decided[0]
        if admission.deliver:
            await asyncio.gather(
                *(self._bucket.put(f"{queue_id}.m.{m.ref.stream_seq}", key.encode()) for m in admission.deliver)
            )
        return admission

    async def _group_of(self, queue_id: str, seq: int) -> str | None:
        entry = await self._bucket.get(f"{queue_id}.m.{seq}")
        return None if entry is None else entry.value.decode()

    async def gone(self, queue_id: str, seq: int) -> None:
        """A delivered message was deleted or moved away: it no longer holds its group."""
        key = await self._group_of(queue_id, seq)
        if key is None:
            return

        def change(state: _State) -> _State | None:
            if seq not in state.batch and seq not in state.waiting:
                return None
            batch = [s for s in state.batch if s != seq]
            return _State(batch, state.until_ms if batch else 0, [s for s in state.waiting if s != seq])

        await self._change(key, change)
        await self._bucket.delete(f"{queue_id}.m.{seq}")

    async def extend(self, queue_id: str, seq: int, visibility: int) -> None:
        """A delivered message's visibility changed: its group's batch is held until then."""
        key = await self._group_of(queue_id, seq)
        if key is None:
            return
        until = int(self._clock() * 1000) + visibility * 1000

        def change(state: _State) -> _State | None:
            if seq not in state.batch:
                return None
            return _State(state.batch, until, state.waiting)

        await self._change(key, change)

    async def forget(self, queue_id: str) -> None:
        """A purged or deleted queue's groups start afresh."""
        keys = await self._bucket.keys(f"{queue_id}.>")
        await asyncio.gather(*(self._bucket.delete(k) for k in keys))
