"""Verbs of one namespace: ``token``, ``pub``, ``sub``, ``queue ...``, ``usage``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any, TypeAlias

from flowgate_client.cli.config import Config, ConfigError
from flowgate_client.cli.output import Output, error
from flowgate_client.client import Client
from flowgate_client.models import Gap

if TYPE_CHECKING:
    Verbs: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def client(config: Config) -> Client:
    return Client(config.url, api_key=config.need_api_key(), app=config.app or "default", retry=config.retry)


def add(verbs: Verbs, parent: argparse.ArgumentParser) -> None:
    from flowgate_client.cli import EPILOG

    def verb(name: str, help: str, handler: Any) -> argparse.ArgumentParser:
        parser = verbs.add_parser(name, help=help, description=help, parents=[parent], epilog=EPILOG)
        parser.set_defaults(handler=handler)
        return parser

    token = verb("token", "exchange the API key for a JWT and print it", cmd_token)
    token.add_argument("--ttl", type=int, help="lifetime in seconds")

    pub = verb("pub", "publish a message (or each line of standard input with -)", cmd_pub)
    pub.add_argument("topic", help="topic (short name, or full userid_app_topic)")
    pub.add_argument("message", nargs="?", default="-", help="the message; - (default) = each stdin line, in order")
    pub.add_argument("--idempotency-key", help="deduplicates retries (with -, line N uses KEY-N)")
    pub.add_argument("--data-json", action="store_true", help="the message (each line) is a JSON value, not text")

    sub = verb("sub", "subscribe and print one line per message (reconnects and resumes)", cmd_sub)
    sub.add_argument("filters", nargs="+", metavar="FILTER", help="topic filters (+ and # wildcards)")
    sub.add_argument("--since", type=int, help="replay from after this seq (0 = everything retained)")
    sub.add_argument("--count", type=int, help="exit after this many messages")

    usage = verb("usage", "this period's usage, quota and balance", cmd_usage)
    del usage

    queue = verbs.add_parser("queue", help="SQS-style queues", description="SQS-style queues", epilog=EPILOG)
    actions = queue.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help: str, handler: Any) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help, description=help, parents=[parent], epilog=EPILOG)
        parser.set_defaults(handler=handler)
        return parser

    send = action("send", "send a message (or each stdin line with -)", cmd_queue_send)
    send.add_argument("queue")
    send.add_argument("body", nargs="?", default="-", help="message body; - (default) = each stdin line")
    send.add_argument("--delay", type=int, help="delay_seconds (0-900)")
    send.add_argument("--attr", action="append", default=[], metavar="NAME=VALUE", help="message attribute")
    receive = action("receive", "receive messages (long poll with --wait)", cmd_queue_receive)
    receive.add_argument("queue")
    receive.add_argument("--max", type=int, default=1, help="at most this many (1-10)")
    receive.add_argument("--wait", type=int, default=0, help="long poll seconds (0-20)")
    receive.add_argument("--visibility", type=int, help="visibility timeout for these messages")
    receive.add_argument("--delete", action="store_true", help="delete each message once printed")
    delete = action("delete", "delete messages by receipt handle, or the queue itself with --queue", cmd_queue_delete)
    delete.add_argument("queue")
    delete.add_argument("receipt_handles", nargs="*", metavar="RECEIPT_HANDLE")
    delete.add_argument("--queue", dest="whole_queue", action="store_true", help="delete the queue")
    purge = action("purge", "delete every message of a queue", cmd_queue_purge)
    purge.add_argument("queue")
    action("list", "list the namespace's queues", cmd_queue_list)
    create = action("create", "create a queue or update its attributes", cmd_queue_create)
    create.add_argument("queue")
    create.add_argument("--visibility-timeout", type=int)
    create.add_argument("--retention", type=int, dest="message_retention_seconds")
    create.add_argument("--delay", type=int, dest="delay_seconds")
    create.add_argument("--receive-wait", type=int, dest="receive_wait_seconds")
    create.add_argument("--max-message-bytes", type=int)
    create.add_argument("--dead-letter-queue", help="redrive to this queue...")
    create.add_argument("--max-receive-count", type=int, default=5, help="...after this many receives")
    attrs = action("attrs", "show a queue's attributes and counts", cmd_queue_attrs)
    attrs.add_argument("queue")


def _stdin_lines() -> list[str]:
    return [line.rstrip("\r\n") for line in sys.stdin]


async def cmd_token(args: argparse.Namespace, config: Config, out: Output) -> int:
    key, app = config.need_api_key(), config.app or "default"
    async with Client(config.url, api_key=key, app=app, ttl=args.ttl, retry=config.retry) as c:
        token = await c.token()
    if out.as_json and getattr(args, "json", False):
        out.json_line({"token": token.token, "expires_at": token.expires_at, "topic_prefix": token.topic_prefix})
    elif out.stream.isatty():
        remaining = int(token.expires_at - time.time())
        out.line(token.token)
        error(f"namespace {token.topic_prefix}, expires in {remaining} s")
    else:
        out.line(token.token)
    return 0


def _message(text: str, as_json: bool) -> Any:
    if not as_json:
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"not JSON (--data-json): {text[:60]!r}") from exc


async def cmd_pub(args: argparse.Namespace, config: Config, out: Output) -> int:
    messages = _stdin_lines() if args.message == "-" else [args.message]
    async with client(config) as c:
        for number, text in enumerate(messages, 1):
            key = args.idempotency_key
            if key is not None and args.message == "-":
                key = f"{key}-{number}"
            result = await c.publish_result(args.topic, _message(text, args.data_json), idempotency_key=key)
            if out.as_json:
                out.json_line({"topic": result.topic, "seq": result.seq, "duplicate": result.duplicate})
            else:
                out.line(f"{result.topic} seq {result.seq}" + (" (duplicate)" if result.duplicate else ""))
    return 0


async def cmd_sub(args: argparse.Namespace, config: Config, out: Output) -> int:
    as_json = bool(getattr(args, "json", False))
    if args.count is not None and args.count <= 0:
        return 0
    received = 0
    async with client(config) as c, c.subscribe(*args.filters, since=args.since) as sub:
        async for item in sub.events():
            if isinstance(item, Gap):
                error(f"gap on {item.topic}: seqs {item.requested_seq}..{item.first_available_seq - 1} are gone")
                continue
            out.line(json.dumps(item.to_json(), ensure_ascii=False) if as_json else item.text)
            received += 1
            if args.count is not None and received >= args.count:
                break
    return 0


def _attributes(pairs: list[str]) -> dict[str, str]:
    attributes = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--attr takes NAME=VALUE, not {pair!r}")
        attributes[name] = value
    return attributes


async def cmd_queue_send(args: argparse.Namespace, config: Config, out: Output) -> int:
    bodies = _stdin_lines() if args.body == "-" else [args.body]
    attributes = _attributes(args.attr)
    async with client(config) as c:
        queue = c.queue(args.queue)
        for body in bodies:
            sent = await queue.send(body, delay_seconds=args.delay, attributes=attributes or None)
            if out.as_json:
                out.json_line({"message_id": sent.message_id, "md5_of_body": sent.md5_of_body, "seq": sent.seq})
            else:
                out.line(f"sent {sent.message_id}")
    return 0


async def cmd_queue_receive(args: argparse.Namespace, config: Config, out: Output) -> int:
    async with client(config) as c:
        queue = c.queue(args.queue)
        messages = await queue.receive(max=args.max, wait=args.wait, visibility_timeout=args.visibility)
        for m in messages:
            if out.as_json:
                out.json_line(
                    {
                        "message_id": m.message_id,
                        "receipt_handle": m.receipt_handle,
                        "body": m.body,
                        "attributes": m.attributes,
                        "receive_count": m.receive_count,
                        "sent_at": m.sent_at,
                    }
                )
            else:
                out.line(m.body)
                error(f"  id {m.message_id}, received {m.receive_count}x, receipt {m.receipt_handle}")
            if args.delete:
                await m.delete()
    return 0


async def cmd_queue_delete(args: argparse.Namespace, config: Config, out: Output) -> int:
    if args.whole_queue == bool(args.receipt_handles):
        raise ConfigError("give receipt handles to delete messages, or --queue (alone) to delete the queue")
    async with client(config) as c:
        queue = c.queue(args.queue)
        if args.whole_queue:
            await queue.delete()
        for handle in args.receipt_handles:
            await queue.delete_message(handle)
    return 0


async def cmd_queue_purge(args: argparse.Namespace, config: Config, out: Output) -> int:
    async with client(config) as c:
        await c.queue(args.queue).purge()
    return 0


async def cmd_queue_list(args: argparse.Namespace, config: Config, out: Output) -> int:
    async with client(config) as c:
        out.show(await c.queues(), columns=("name", "queue"))
    return 0


async def cmd_queue_create(args: argparse.Namespace, config: Config, out: Output) -> int:
    names = ("visibility_timeout", "message_retention_seconds", "delay_seconds", "receive_wait_seconds")
    attributes: dict[str, Any] = {n: getattr(args, n) for n in (*names, "max_message_bytes") if getattr(args, n)}
    if args.dead_letter_queue:
        attributes["redrive_policy"] = {
            "dead_letter_queue": args.dead_letter_queue,
            "max_receive_count": args.max_receive_count,
        }
    async with client(config) as c:
        out.show(await c.queue(args.queue).create(**attributes))
    return 0


async def cmd_queue_attrs(args: argparse.Namespace, config: Config, out: Output) -> int:
    async with client(config) as c:
        out.show(await c.queue(args.queue).attributes())
    return 0


async def cmd_usage(args: argparse.Namespace, config: Config, out: Output) -> int:
    async with client(config) as c:
        out.show(await c.usage())
    return 0
