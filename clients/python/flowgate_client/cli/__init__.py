"""The ``flowgate`` command line's client and admin verbs, built on the SDK.

Exit codes (``EXIT_CODES``): 0 done; 1 the gateway refused the request (any other
error answer); 2 usage or configuration error; 3 gateway unreachable; 4 not
authorised (401, 403); 5 payment required or rate limited (402, 429); 6 not
found (404); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from collections.abc import Sequence

from flowgate_client.cli import admin_verbs, client_verbs
from flowgate_client.cli.completion import bash_completion
from flowgate_client.cli.config import ConfigError, Fallbacks, resolve
from flowgate_client.cli.output import Output, error
from flowgate_client.errors import ApiError, ConnectionFailed, FlowGateError

EXIT_OK = 0
EXIT_API = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_LIMIT = 5
EXIT_NOT_FOUND = 6
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_API: "the gateway answered with an error",
    EXIT_USAGE: "usage or configuration error",
    EXIT_UNREACHABLE: "gateway unreachable",
    EXIT_AUTH: "not authorised (401 or 403)",
    EXIT_LIMIT: "payment required or rate limited (402 or 429)",
    EXIT_NOT_FOUND: "not found (404)",
    EXIT_INTERRUPTED: "interrupted",
}

EPILOG = "exit codes: " + "; ".join(f"{code} {text}" for code, text in EXIT_CODES.items())


def common_options() -> argparse.ArgumentParser:
    """Options every verb takes (also after the verb)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument("--url", default=argparse.SUPPRESS, help="gateway base URL (FLOWGATE_URL)")
    group.add_argument("--api-key", default=argparse.SUPPRESS, help="API key (FLOWGATE_API_KEY)")
    group.add_argument("--app", default=argparse.SUPPRESS, help="app of the namespace (FLOWGATE_APP)")
    group.add_argument("--admin-key", default=argparse.SUPPRESS, help="admin key for admin verbs (FLOWGATE_ADMIN_KEY)")
    group.add_argument("--profile", default=argparse.SUPPRESS, help="profile in ~/.config/flowgate/config.toml")
    group.add_argument(
        "--retries", type=int, default=argparse.SUPPRESS, help="retries on 429, 503 and connection errors (default 4)"
    )
    group.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    return parent


def build_parser(prog: str = "flowgate", parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The client and admin verbs, added to ``parser`` (a host program's, with its own verbs) or a new one."""
    parent = common_options()
    if parser is None:
        parser = argparse.ArgumentParser(prog=prog, description="Flow-Gate command line", epilog=EPILOG)
    verbs = _subparsers(parser)
    client_verbs.add(verbs, parent)
    admin_verbs.add(verbs, parent)
    completion = verbs.add_parser("completion", help="print a shell completion script", epilog=EPILOG)
    completion.add_argument("shell", choices=["bash"], help="the shell")
    completion.set_defaults(handler=None)
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    existing = parser._subparsers
    if existing is not None:
        for action in existing._group_actions:
            if isinstance(action, argparse._SubParsersAction):
                return action
    return parser.add_subparsers(dest="command", required=True, metavar="COMMAND")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser, fallbacks: Fallbacks | None = None) -> int:
    """Carry out parsed ``args`` of a client or admin verb; the exit code."""
    if args.command == "completion":
        sys.stdout.write(bash_completion(parser))
        return EXIT_OK
    options = {name: getattr(args, name, None) for name in ("url", "api_key", "app", "admin_key")}
    try:
        config = resolve(options, os.environ, getattr(args, "profile", None), fallbacks or Fallbacks())
        config = dataclasses.replace(config, retries=getattr(args, "retries", None))
        out = Output(bool(getattr(args, "json", False)))
        return int(asyncio.run(args.handler(args, config, out)) or EXIT_OK)
    except ConfigError as exc:
        error(str(exc))
        return EXIT_USAGE
    except ConnectionFailed as exc:
        error(f"gateway unreachable: {exc}")
        return EXIT_UNREACHABLE
    except ApiError as exc:
        error(str(exc))
        return exit_code(exc)
    except FlowGateError as exc:
        error(str(exc))
        return EXIT_API
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (| head): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return EXIT_OK


def exit_code(exc: ApiError) -> int:
    if exc.status in (401, 403):
        return EXIT_AUTH
    if exc.status in (402, 429):
        return EXIT_LIMIT
    if exc.status == 404:
        return EXIT_NOT_FOUND
    return EXIT_API


def main(argv: Sequence[str] | None = None, fallbacks: Fallbacks | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run(args, parser, fallbacks)
