"""The ``flowgate`` command: ``serve``, and admin twins for bootstrapping.

``flowgate users create alice`` and ``flowgate keys create alice --name ci``
call the running gateway's admin API with the admin key from
``FLOWGATE_ADMIN_KEY`` or ``<data dir>/admin.key``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import httpx
import orjson

from gateway.embedded_nats import EmbeddedNatsError
from gateway.settings import Settings, SettingsError


def _admin_request(
    settings: Settings, url: str | None, method: str, path: str, body: dict[str, Any] | None = None
) -> int:
    key = settings.admin_key
    if key is None:
        key_file = settings.data_dir / "admin.key"
        if not key_file.exists():
            print(
                f"flowgate: no admin key: set FLOWGATE_ADMIN_KEY or start the gateway once to create {key_file}",
                file=sys.stderr,
            )
            return 2
        key = key_file.read_text().strip()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = url or f"http://{host}:{settings.http_port}"
    try:
        response = httpx.request(method, base + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    except httpx.HTTPError as exc:
        print(f"flowgate: gateway not reachable at {base}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(orjson.dumps(response.json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0 if response.is_success else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowgate", description="Flow-Gate messaging gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_command = commands.add_parser("serve", help="start the gateway (HTTP, SSE, WebSocket, MQTT)")
    serve_command.add_argument(
        "--workers", help="worker processes sharing the ports (a number or `auto`; default FLOWGATE_WORKERS)"
    )
    users = commands.add_parser("users", help="manage users").add_subparsers(dest="action", required=True)
    create_user = users.add_parser("create", help="create a user")
    create_user.add_argument("user_id")
    create_user.add_argument("--plan", default="free")
    users.add_parser("list", help="list users")
    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    create_key = keys.add_parser("create", help="create an API key for a user (the value is shown once)")
    create_key.add_argument("user_id")
    create_key.add_argument("--name", default="default")
    for sub in (create_user, create_key):
        sub.add_argument("--url", help="gateway base URL (default http://FLOWGATE_HOST:FLOWGATE_HTTP_PORT)")
    args = parser.parse_args(argv)

    try:
        workers = getattr(args, "workers", None)
        environ = os.environ if workers is None else {**os.environ, "FLOWGATE_WORKERS": workers}
        settings = Settings.from_env(environ)
    except SettingsError as exc:
        print(f"flowgate: invalid setting: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        from gateway.logging import configure
        from gateway.server import serve

        configure(settings)
        try:
            return serve(settings)
        except EmbeddedNatsError as exc:
            print(f"flowgate: {exc}", file=sys.stderr)
            return 2
    if args.command == "users" and args.action == "create":
        return _admin_request(
            settings, args.url, "POST", "/api/v1/admin/users", {"user_id": args.user_id, "plan": args.plan}
        )
    if args.command == "users":
        return _admin_request(settings, None, "GET", "/api/v1/admin/users")
    return _admin_request(settings, args.url, "POST", f"/api/v1/admin/users/{args.user_id}/keys", {"name": args.name})


if __name__ == "__main__":
    raise SystemExit(main())
