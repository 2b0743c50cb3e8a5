"""Settings come from FLOWGATE_* variables; bad values name the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.settings import Settings, SettingsError
from tests.harness import ROOT


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.http_port, settings.mqtt_port) == ("127.0.0.1", 8080, 1883)
    assert settings.data_dir == Path("./data") and settings.nats_url is None
    assert settings.max_message_bytes == 1024 * 1024


def test_values_are_parsed() -> None:
    settings = Settings.from_env({"FLOWGATE_HTTP_PORT": "9000", "FLOWGATE_NATS_URL": "nats://n1:4222,nats://n2:4222"})
    assert settings.http_port == 9000 and settings.nats_url == "nats://n1:4222,nats://n2:4222"


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("FLOWGATE_HTTP_PORT", "http"),
        ("FLOWGATE_MQTT_PORT", "70000"),
        ("FLOWGATE_NATS_URL", "localhost:4222"),
        ("FLOWGATE_ADMIN_KEY", "short"),
        ("FLOWGATE_LOG_LEVEL", "loud"),
        ("FLOWGATE_MAX_MESSAGE_BYTES", "-1"),
    ],
)
def test_invalid_values_name_the_variable(env: str, value: str) -> None:
    with pytest.raises(SettingsError, match=env):
        Settings.from_env({env: value})


def test_settings_are_frozen() -> None:
    settings = Settings.from_env({})
    with pytest.raises(AttributeError):
        settings.http_port = 1  # type: ignore[misc]


def test_invalid_setting_stops_start_up_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flowgate.cli", "serve"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "FLOWGATE_HTTP_PORT": "not-a-port"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "flowgate: invalid setting: FLOWGATE_HTTP_PORT='not-a-port': invalid literal for int() with base 10: 'not-a-port'"
    ]


def test_missing_nats_server_is_one_clear_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flowgate.cli", "serve"],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "FLOWGATE_DATA_DIR": str(tmp_path),
            "FLOWGATE_NATS_SERVER_BIN": "no-such-nats-server",
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nats-server not found" in lines[0] and "FLOWGATE_NATS_URL" in lines[0]
