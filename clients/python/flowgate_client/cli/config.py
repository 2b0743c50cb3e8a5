"""Where the command line finds its gateway and keys.

Highest first: command-line options; ``FLOWGATE_URL``, ``FLOWGATE_API_KEY``,
``FLOWGATE_APP``, ``FLOWGATE_ADMIN_KEY``; the profile (``--profile`` or
``FLOWGATE_PROFILE``, else ``default``) in ``~/.config/flowgate/config.toml``
(``$XDG_CONFIG_HOME`` honoured, ``FLOWGATE_CONFIG`` names another file)::

    [default]
    url = "http://localhost:8080"
    api_key = "fgk_..."
    app = "myapp"
    admin_key = "..."        # for users, keys, credits, plans

    [staging]
    url = "https://gw.staging.example"

and last the fallbacks a host program supplies (the gateway's ``flowgate`` uses
its own ``FLOWGATE_HOST``/``FLOWGATE_HTTP_PORT`` and ``<data dir>/admin.key``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowgate_client.transport import Retry

DEFAULT_URL = "http://127.0.0.1:8080"
FIELDS = ("url", "api_key", "app", "admin_key")
ENV = {"url": "FLOWGATE_URL", "api_key": "FLOWGATE_API_KEY", "app": "FLOWGATE_APP", "admin_key": "FLOWGATE_ADMIN_KEY"}


class ConfigError(Exception):
    """The configuration is missing something or cannot be read."""


@dataclass(frozen=True, slots=True)
class Fallbacks:
    """Lazily computed last-resort values (``url``, ``admin_key``) from the program that embeds the CLI."""

    url: Callable[[], str | None] = lambda: None
    admin_key: Callable[[], str | None] = lambda: None


@dataclass(frozen=True, slots=True)
class Config:
    url: str
    api_key: str | None
    app: str | None
    admin_key: str | None
    retries: int | None = None

    @property
    def retry(self) -> Retry:
        return Retry() if self.retries is None else Retry(max_retries=max(0, self.retries))

    def need_api_key(self) -> str:
        if not self.api_key:
            raise ConfigError(
                "no API key: pass --api-key, set FLOWGATE_API_KEY, or put api_key in the profile of "
                f"{config_path(os.environ)}"
            )
        return self.api_key

    def need_admin_key(self) -> str:
        if not self.admin_key:
            raise ConfigError("no admin key: pass --admin-key, set FLOWGATE_ADMIN_KEY, or put admin_key in the profile")
        return self.admin_key


def config_path(environ: Mapping[str, str]) -> Path:
    if environ.get("FLOWGATE_CONFIG"):
        return Path(environ["FLOWGATE_CONFIG"])
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "flowgate" / "config.toml"


def load_profile(environ: Mapping[str, str], profile: str | None) -> dict[str, Any]:
    path = config_path(environ)
    name = profile or environ.get("FLOWGATE_PROFILE") or "default"
    if not path.exists():
        if profile:
            raise ConfigError(f"profile {profile!r} asked for, but {path} does not exist")
        return {}
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    section = document.get(name)
    if section is None:
        if profile or environ.get("FLOWGATE_PROFILE"):
            raise ConfigError(f"no profile [{name}] in {path} (it has: {', '.join(document) or 'none'})")
        return {}
    if not isinstance(section, dict):
        raise ConfigError(f"[{name}] in {path} must be a table")
    unknown = set(section) - set(FIELDS)
    if unknown:
        raise ConfigError(f"[{name}] in {path}: unknown keys {sorted(unknown)}; use {', '.join(FIELDS)}")
    return section


def resolve(
    options: Mapping[str, str | None],
    environ: Mapping[str, str],
    profile: str | None,
    fallbacks: Fallbacks,
) -> Config:
    values: dict[str, str | None] = {}
    section = load_profile(environ, profile)
    for name in FIELDS:
        value = options.get(name) or environ.get(ENV[name]) or section.get(name)
        values[name] = str(value) if value else None
    url = values["url"] or fallbacks.url() or DEFAULT_URL
    admin_key = values["admin_key"] or fallbacks.admin_key()
    return Config(url.rstrip("/"), values["api_key"], values["app"], admin_key)
