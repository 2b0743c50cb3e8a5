"""The NATS protocol parser of the gateway's connection: nats-py's, minus its per-message overhead.

nats-py's ``Parser.parse`` tries a regular expression per control line,
deletes each line and each payload from the front of its buffer (two
``memmove`` per message) and awaits ``Client._process_msg`` for every message.
``FastParser`` reads the same protocol with indexes into one snapshot of the
buffer: the control line is found with ``find(b"\\r\\n")`` and ``split()``,
the buffer is compacted once per chunk, and each message is first offered to
the client's synchronous ``_dispatch_fast`` (``AckClient``); only when that
declines is ``_process_msg`` awaited (through ``natspy.process_msg``).

Only canonical lines take that path: ``MSG``/``HMSG`` with whitespace
separated arguments ending in digits, and bare ``PING``, ``PONG``, ``+OK``.
Anything else (``INFO``, ``-ERR``, malformed or unknown lines, an oversized partial line) is handed, with the rest of the buffer, to
nats-py's own ``Parser.parse``, so its results and its ``ProtocolError`` cases
are nats-py's by construction. The parser state between calls (``buf``,
``state``, ``needed``, ``header_needed``, ``msg_arg``) means what it means in
nats-py. nats-py may ``reset()`` the parser (a reconnect) while a callback is
awaited; the parser then stops reading the old buffer.
"""

from __future__ import annotations

from nats.protocol.parser import AWAITING_CONTROL_LINE, AWAITING_MSG_PAYLOAD, MAX_CONTROL_LINE_SIZE, Parser

from gateway.bus.natspy import process_msg, process_ping, process_pong

_CRLF = b"\r\n"
_MSG = b"MSG"
_HMSG = b"HMSG"
_PING = b"PING"
_PONG = b"PONG"
_OK = b"+OK"
_M, _H, _P, _PLUS = ord("M"), ord("H"), ord("P"), ord("+")
_DIGITS = b"0123456789"


class FastParser(Parser):
    """nats-py's parser with index-based scanning and synchronous message dispatch first."""

    async def parse(self, data: bytes = b"") -> None:
        buf = self.buf
        buf.extend(data)
        if self.state == AWAITING_MSG_PAYLOAD and len(buf) < self.needed + 2:
            return  # most of a large payload still to come: no copy yet
        if not buf:
            return
        nc = self.nc
        raw = bytes(buf)  # one copy per chunk; slices of it are the messages' bytes
        end = len(raw)
        pos = 0
        try:
            if self.state == AWAITING_MSG_PAYLOAD:  # a control line parsed by the previous call
                args = self.msg_arg
                needed, hlen = self.needed, self.header_needed
                if hlen > 0:
                    hdr: bytes | None = raw[:hlen]
                    payload = raw[hlen:needed]
                else:
                    hdr, payload = None, raw[:needed]
                pos = needed + 2
                self.state = AWAITING_CONTROL_LINE
                self.header_needed = 0
                sid, subject, reply = args["sid"], args["subject"], args["reply"]
                if not nc._dispatch_fast(sid, subject, reply, payload, hdr):
                    await process_msg(nc, sid, subject, reply, payload, hdr)
                    if self.buf is not buf:
                        return
            while pos < end:
                eol = raw.find(_CRLF, pos)
                if eol < 0:
                    if end - pos < MAX_CONTROL_LINE_SIZE:
                        return  # a split control line: wait for the rest
                    break  # nats-py decides what an oversized partial line means
                first = raw[pos]
                if first == _M or first == _H:
                    line = raw[pos:eol]
                    tokens = line.split()
                    count = len(tokens)
                    # Any run of whitespace separates arguments, as in nats-py's patterns: the server
                    # writes "MSG <subject> <sid>  <size>" (two spaces) for a message without a reply.
                    if raw[eol - 1] not in _DIGITS or not tokens[-1].isdigit():
                        break
                    if first == _M:
                        if tokens[0] != _MSG or not 4 <= count <= 5:
                            break
                        hlen, reply = 0, tokens[3] if count == 5 else b""
                    else:
                        if tokens[0] != _HMSG or not 5 <= count <= 6 or not tokens[-2].isdigit():
                            break
                        hlen, reply = int(tokens[-2]), tokens[3] if count == 6 else b""
                    try:
                        sid = int(tokens[2])
                    except ValueError:
                        break  # nats-py: "malformed MSG"
                    subject = tokens[1]
                    needed = int(tokens[-1])
                    start = eol + 2
                    if end - start < needed + 2:  # the payload is still to come
                        pos = start
                        self.msg_arg["subject"] = subject
                        self.msg_arg["sid"] = sid
                        self.msg_arg["reply"] = reply
                        self.needed, self.header_needed = needed, hlen
                        self.state = AWAITING_MSG_PAYLOAD
                        return
                    if hlen > 0:
                        hdr, payload = raw[start : start + hlen], raw[start + hlen : start + needed]
                    else:
                        hdr, payload = None, raw[start : start + needed]
                    pos = start + needed + 2
                    if not nc._dispatch_fast(sid, subject, reply, payload, hdr):
                        await process_msg(nc, sid, subject, reply, payload, hdr)
                        if self.buf is not buf:
                            return
                    continue
                line = raw[pos:eol]
                if line == _PING:
                    pos = eol + 2
                    await process_ping(nc)
                elif line == _PONG:
                    pos = eol + 2
                    await process_pong(nc)
                elif line == _OK:
                    pos = eol + 2
                    continue
                else:
                    break  # INFO, -ERR, anything unusual: nats-py's parser
                if self.buf is not buf:
                    return
            else:
                return
        finally:
            if pos and self.buf is buf:
                del buf[:pos]
        await super().parse()  # the rest of the buffer, from a line this parser leaves to nats-py
