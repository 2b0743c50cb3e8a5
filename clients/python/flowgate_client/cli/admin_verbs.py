"""Admin verbs (admin key): ``users``, ``keys``, ``credits``, ``plans``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, TypeAlias

from flowgate_client.cli.config import Config
from flowgate_client.cli.output import Output
from flowgate_client.client import AdminClient

if TYPE_CHECKING:
    Verbs: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

USER_COLUMNS = ("user_id", "plan", "disabled", "created_at")
KEY_COLUMNS = ("id", "name", "created_at")
PLAN_COLUMNS = ("name", "quota", "rate", "burst", "max_connections", "max_message_bytes")


def admin(config: Config) -> AdminClient:
    return AdminClient(config.url, config.need_admin_key(), retry=config.retry)


def add(verbs: Verbs, parent: argparse.ArgumentParser) -> None:
    from flowgate_client.cli import EPILOG

    def group(name: str, help: str) -> Any:
        parser = verbs.add_parser(name, help=help, description=help, epilog=EPILOG)
        return parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(actions: Any, name: str, help: str, handler: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name, help=help, description=help, parents=[parent], epilog=EPILOG
        )
        parser.set_defaults(handler=handler)
        return parser

    users = group("users", "accounts (admin)")
    create = action(users, "create", "create a user", users_create)
    create.add_argument("user_id")
    create.add_argument("--plan", default="free")
    action(users, "list", "list users", users_list)
    for name, help, handler in (
        ("show", "show a user", users_show),
        ("delete", "delete a user", users_delete),
        ("disable", "disable a user", users_disable),
        ("enable", "enable a disabled user", users_enable),
        ("usage", "a user's usage this period", users_usage),
    ):
        action(users, name, help, handler).add_argument("user_id")

    keys = group("keys", "a user's API keys (admin)")
    create_key = action(keys, "create", "create an API key for a user (the value is shown once)", keys_create)
    create_key.add_argument("user_id")
    create_key.add_argument("--name", default="default")
    create_key.add_argument("--rate", type=float, help="the key's own publish rate limit (per second)")
    create_key.add_argument("--burst", type=int, help="...and burst")
    action(keys, "list", "list a user's keys", keys_list).add_argument("user_id")
    delete_key = action(keys, "delete", "delete a key", keys_delete)
    delete_key.add_argument("user_id")
    delete_key.add_argument("key_id")

    credits = group("credits", "prepaid balance (admin)")
    add_credits = action(credits, "add", "top up a user's balance", credits_add)
    add_credits.add_argument("user_id")
    add_credits.add_argument("amount", type=int)
    action(credits, "show", "a user's balance and usage", users_usage).add_argument("user_id")

    plans = group("plans", "a user's plan and limit overrides (admin)")
    set_plan = action(plans, "set", "set a user's plan and/or limit overrides", plans_set)
    set_plan.add_argument("user_id")
    set_plan.add_argument("plan", nargs="?", help="plan name (free, pro, or one of FLOWGATE_PLANS_FILE)")
    for limit in ("quota", "burst", "max_connections", "max_message_bytes"):
        set_plan.add_argument("--" + limit.replace("_", "-"), type=int, dest=limit, help=f"override the plan's {limit}")
    set_plan.add_argument("--rate", type=float, help="override the plan's publish rate")
    set_plan.add_argument("--clear", action="append", default=[], metavar="LIMIT", help="remove an override")
    action(plans, "show", "a user's plan, limits and usage", users_usage).add_argument("user_id")
    action(plans, "list", "the configured plans and prices", plans_list)


async def users_create(args: argparse.Namespace, config: Config, out: Output) -> int:
    async with admin(config) as a:
        out.show(await a.create_user(args.user_id, args.plan))
    return 0


async def users_list(args: argparse.Namespace, config: Config, out: Output) -> int:
    async with admin(config) as a:
        users = await a.users()
    out.show({"users": users} if out.as_json else users, columns=USER_COLUMNS)
    return 0


async def users_show(args: argparse.Namespace, config: Config, out: Output) -> int:
    async with admin(config) as a:
        out.show(await a.user(args.user_id))
    return 0


async def users_delete(args: argparse.Namespace, config: Config, out: Output) -> int:
    async with admin(config) as a:
        await a.delete_user(args.user_id)
    return 0


async def users_disable(args: argparse.Namespace, config: Config, out: Output) -> int:
    async with admin(config) as a:
        out.show(await a.update_user(args.user_id, disabled=True))
    return 0


async def users_enable(args: argparse.Namespace, config: Config, out: Output) -> int:
    async with admin(config) as a:
        out.show(await a.update_user(args.user_id, disabled=False))
    return 0


async def users_usage(args: argparse.Namespace, config: Config, out: Output) -> int:
    async with admin(config) as a:
        out.show(await a.usage(args.user_id))
    return 0


async def keys_create(args: argparse.Namespace, config: Config, out: Output) -> int:
    async with admin(config) as a:
        out.show(await a.create_key(args.user_id, args.name, rate=args.rate, burst=args.burst))
    return 0


async def keys_list(args: argparse.Namespace, config: Config, out: Output) -> int:
    async with admin(config) as a:
        keys = await a.keys(args.user_id)
    out.show({"keys": keys} if out.as_json else keys, columns=KEY_COLUMNS)
    return 0


async def keys_delete(args: argparse.Namespace, config: Config, out: Output) -> int:
    async with admin(config) as a:
        await a.delete_key(args.user_id, args.key_id)
    return 0


async def credits_add(args: argparse.Namespace, config: Config, out: Output) -> int:
    async with admin(config) as a:
        out.show(await a.add_credits(args.user_id, args.amount))
    return 0


async def plans_list(args: argparse.Namespace, config: Config, out: Output) -> int:
    async with admin(config) as a:
        answer = await a.plans()
    out.show(answer if out.as_json else answer["plans"], columns=PLAN_COLUMNS)
    return 0


async def plans_set(args: argparse.Namespace, config: Config, out: Output) -> int:
    limits: dict[str, int | float | None] = {
        name: getattr(args, name)
        for name in ("quota", "rate", "burst", "max_connections", "max_message_bytes")
        if getattr(args, name) is not None
    }
    for name in args.clear:
        limits[name.replace("-", "_")] = None
    async with admin(config) as a:
        out.show(await a.update_user(args.user_id, plan=args.plan, limits=limits or None))
    return 0
