"""The ``flowgate`` command: ``serve``, plus the client and admin verbs of ``flowgate_client.cli``.

``flowgate pub``, ``sub``, ``token``, ``queue ...``, ``usage`` and the admin verbs
(``users``, ``keys``, ``credits``, ``plans``) come from the Python SDK's command line
(``clients/python``). Run next to a gateway they need no configuration: the URL
defaults to this gateway's ``FLOWGATE_HOST``/``FLOWGATE_HTTP_PORT`` and the admin key
to ``FLOWGATE_ADMIN_KEY`` or ``<data dir>/admin.key``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING

from gateway.settings import Settings, SettingsError

if TYPE_CHECKING:
    from flowgate_client.cli.config import Fallbacks


def _fallbacks() -> Fallbacks:
    """The URL and admin key of the gateway these settings describe, computed only when a verb needs them."""
    from flowgate_client.cli.config import Fallbacks

    def settings() -> Settings | None:
        try:
            return Settings.from_env()
        except SettingsError:
            return None

    def url() -> str | None:
        s = settings()
        if s is None:
            return None
        host = "127.0.0.1" if s.host in ("0.0.0.0", "::") else s.host
        if s.http_port == -1:  # the plain port is off: the HTTPS listener
            return f"https://{host}:{s.https_port}"
        return f"http://{host}:{s.http_port}"

    def admin_key() -> str | None:
        s = settings()
        if s is None:
            return None
        if s.admin_key is not None:
            return s.admin_key
        key_file = s.data_dir / "admin.key"
        return key_file.read_text().strip() if key_file.exists() else None

    return Fallbacks(url=url, admin_key=admin_key)


def _client_cli() -> ModuleType | None:
    try:
        return importlib.import_module("flowgate_client.cli")
    except ImportError:  # the SDK (clients/python) is not installed: serve only
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowgate", description="Flow-Gate messaging gateway")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_command = commands.add_parser("serve", help="start the gateway (HTTP, SSE, WebSocket, MQTT)")
    serve_command.add_argument(
        "--workers", help="worker processes sharing the ports (a number or `auto`; default FLOWGATE_WORKERS)"
    )
    client_cli = _client_cli()
    if client_cli is not None:
        client_cli.build_parser(parser=parser)
        parser.epilog = client_cli.EPILOG
    args = parser.parse_args(argv)

    if args.command != "serve":
        assert client_cli is not None
        return int(client_cli.run(args, parser, _fallbacks()))
    try:
        workers = getattr(args, "workers", None)
        environ = os.environ if workers is None else {**os.environ, "FLOWGATE_WORKERS": workers}
        settings = Settings.from_env(environ)
    except SettingsError as exc:
        print(f"flowgate: invalid setting: {exc}", file=sys.stderr)
        return 2
    from flowgate.embedded_nats import EmbeddedNatsError  # imported here: the client verbs start faster without
    from flowgate.server import serve
    from gateway.logging import configure

    configure(settings)
    try:
        return serve(settings)
    except EmbeddedNatsError as exc:
        print(f"flowgate: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
