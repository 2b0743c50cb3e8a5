"""The ``flowgate`` command's client and admin verbs, run as real subprocesses against a real gateway."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.harness import Gateway, free_port

FLOWGATE = str(Path(sys.executable).parent / "flowgate")


class Cli:
    def __init__(self, gw: Gateway, api_key: str, config: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWGATE_")}
        self.env.update(
            FLOWGATE_URL=gw.base_url,
            FLOWGATE_API_KEY=api_key,
            FLOWGATE_APP="cli",
            FLOWGATE_ADMIN_KEY=gw.admin_key,
            FLOWGATE_CONFIG=str(config),
        )
        self.slow_key = ""

    def run(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None, shell: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        command: list[str] | str = shell if shell is not None else [FLOWGATE, *args]
        return subprocess.run(
            command,
            input=stdin,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=30,
            shell=shell is not None,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        done = self.run(*args, stdin=stdin)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def json(self, *args: str) -> object:
        return json.loads(self.ok(*args, "--json"))

    def on_terminal(self, *args: str) -> str:
        """What a command prints when its standard output is a terminal (a pseudo-terminal here)."""
        leader, follower = os.openpty()
        try:
            done = subprocess.run([FLOWGATE, *args], stdout=follower, stderr=subprocess.PIPE, env=self.env, timeout=30)
            assert done.returncode == 0, done.stderr
            os.close(follower)
            chunks = []
            while chunk := _read(leader):
                chunks.append(chunk)
            return b"".join(chunks).decode().replace("\r\n", "\n")
        finally:
            os.close(leader)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the terminal's other end is closed and everything was read
        return b""


@pytest.fixture(scope="module")
def cli(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    user_id, key = gateway.new_user()
    cli = Cli(gateway, key, tmp_path_factory.mktemp("cli") / "config.toml")
    spent = gateway.admin(
        "POST", f"/api/v1/admin/users/{user_id}/keys", json={"name": "slow", "rate_limit": {"rate": 0.01}}
    )
    cli.slow_key = spent.json()["key"]  # its one publish (burst 1) is made here: the next one gets 429
    assert httpx.post(
        gateway.base_url + "/api/v1/publish",
        headers={"Authorization": "Bearer " + gateway.token(cli.slow_key)},
        json={"topic": "t", "message": "spends the burst"},
    ).is_success
    yield cli


@pytest.fixture(scope="module")
def flows(cli: Cli) -> Iterator[dict[str, Future[None]]]:
    """The flows below (each a sequence of commands) all start at once, each in its own thread, so the
    module takes about as long as its longest flow; each test waits for its own flow and reports it."""
    with ThreadPoolExecutor(len(FLOWS)) as pool:
        yield {flow.__name__: pool.submit(flow, cli) for flow in FLOWS}


def piped_lines_are_published_in_order_and_sub_replays_them(cli: Cli) -> None:
    piped = cli.run(shell=f"seq 1 100 | {FLOWGATE} pub t -")
    assert piped.returncode == 0, piped.stderr
    seqs = [json.loads(line)["seq"] for line in piped.stdout.splitlines()]  # JSON lines when piped
    assert len(seqs) == 100 and seqs == sorted(seqs)
    sub = cli.run("sub", "t", "--since", "0", "--count", "100")
    assert sub.returncode == 0, sub.stderr
    assert sub.stdout.splitlines() == [str(n) for n in range(1, 101)]
    first = json.loads(cli.ok("sub", "t", "--since", "0", "--count", "1", "--json"))
    assert first["topic"] == "t" and first["data"] == "1" and first["seq"] == seqs[0]


def pub_json_idempotency_and_sub_with_several_filters(cli: Cli) -> None:
    one = json.loads(cli.ok("pub", "a", '{"x": 1}', "--data-json", "--json", "--idempotency-key", "k1"))
    again = json.loads(cli.ok("pub", "a", '{"x": 1}', "--data-json", "--json", "--idempotency-key", "k1"))
    assert again == {**one, "duplicate": True} and not one["duplicate"]
    cli.ok("pub", "b/c", "plain text")
    cli.ok("pub", "elsewhere", "not me")
    lines = cli.ok("sub", "a", "b/+", "--since", str(one["seq"] - 1), "--count", "2").splitlines()
    assert lines == ['{"x":1}', "plain text"]
    assert cli.run("pub", "a", "not json", "--data-json").returncode == 2


def token_usage_and_help(cli: Cli) -> None:
    token = cli.ok("token").strip()
    assert token.count(".") == 2
    as_json = cli.json("token", "--ttl", "60")
    assert isinstance(as_json, dict) and as_json["topic_prefix"].endswith("_cli_")
    usage = cli.json("usage")
    assert isinstance(usage, dict) and "quota" in usage and "used" in usage
    verbs = ["sub", "queue receive", "users create", "plans set"]
    with ThreadPoolExecutor(4) as pool:
        helps = list(pool.map(lambda v: cli.run(*v.split(), "--help"), verbs))
    for verb, done in zip(verbs, helps, strict=True):
        assert done.returncode == 0 and "usage: flowgate " + verb in done.stdout and "exit codes" in done.stdout


def queue_verbs(cli: Cli) -> None:
    created = cli.json("queue", "create", "jobs", "--visibility-timeout", "40")
    assert isinstance(created, dict) and created["attributes"]["visibility_timeout"] == 40
    sent = cli.ok("queue", "send", "jobs", "-", "--attr", "kind=x", "--json", stdin="first\nsecond\n")
    assert len(sent.splitlines()) == 2
    received = [
        json.loads(line)
        for line in cli.ok("queue", "receive", "jobs", "--max", "10", "--wait", "1", "--json").splitlines()
    ]
    assert sorted(m["body"] for m in received) == ["first", "second"]
    assert all(m["attributes"] == {"kind": "x"} for m in received)
    cli.ok("queue", "delete", "jobs", *(m["receipt_handle"] for m in received))
    attrs = cli.json("queue", "attrs", "jobs")
    assert isinstance(attrs, dict) and attrs["approximate_visible"] == 0 and attrs["approximate_in_flight"] == 0
    listed = cli.json("queue", "list")
    assert isinstance(listed, list) and "jobs" in [q["name"] for q in listed]
    cli.ok("queue", "send", "jobs", "third")
    cli.ok("queue", "purge", "jobs")
    cli.ok("queue", "delete", "jobs", "--queue")
    assert cli.run("queue", "attrs", "jobs").returncode == 6  # not found


def admin_verbs(cli: Cli) -> None:
    assert cli.json("users", "create", "cli-admin", "--plan", "free") is not None
    users = cli.json("users", "list")
    assert isinstance(users, dict) and "cli-admin" in [u["user_id"] for u in users["users"]]
    table = cli.on_terminal("users", "list").splitlines()
    assert table[0].split()[:2] == ["USER_ID", "PLAN"] and any(row.startswith("cli-admin ") for row in table)
    key = cli.json("keys", "create", "cli-admin", "--name", "ci")
    assert isinstance(key, dict) and key["key"].startswith("fgk_")
    keys = cli.json("keys", "list", "cli-admin")
    assert isinstance(keys, dict) and [k["id"] for k in keys["keys"]] == [key["id"]]
    credits = cli.json("credits", "add", "cli-admin", "25")
    assert isinstance(credits, dict) and credits["balance"] == 25
    changed = cli.json("plans", "set", "cli-admin", "pro", "--quota", "1000")
    assert isinstance(changed, dict) and changed["plan"] == "pro" and changed["extra"]["limits"] == {"quota": 1000}
    plans = cli.json("plans", "list")
    assert isinstance(plans, dict) and {"free", "pro"} <= {p["name"] for p in plans["plans"]}
    shown = cli.json("plans", "show", "cli-admin")
    assert isinstance(shown, dict) and shown["quota"] == 1000 and shown["balance"] == 25
    disabled = cli.json("users", "disable", "cli-admin")
    assert isinstance(disabled, dict) and disabled["disabled"] is True
    cli.ok("keys", "delete", "cli-admin", key["id"])
    cli.ok("users", "delete", "cli-admin")
    assert cli.run("users", "show", "cli-admin").returncode == 6


def exit_codes_profiles_and_completion(cli: Cli) -> None:
    runs = [
        (("pub", "t", "x", "--retries", "0"), {"FLOWGATE_API_KEY": cli.slow_key}),
        (("pub", "t", "x"), {"FLOWGATE_API_KEY": "fgk_bad_bad"}),
        (("usage", "--retries", "0"), {"FLOWGATE_URL": f"http://127.0.0.1:{free_port()}"}),
        (("usage",), {"FLOWGATE_API_KEY": ""}),
        (("users", "list"), {"FLOWGATE_ADMIN_KEY": "wrong"}),
    ]
    with ThreadPoolExecutor(4) as pool:
        too_fast, bad_key, unreachable, missing, bad_admin = pool.map(lambda r: cli.run(*r[0], env=r[1]), runs)
    assert too_fast.returncode == 5 and "429" in too_fast.stderr
    assert bad_key.returncode == 4 and "401" in bad_key.stderr
    assert unreachable.returncode == 3 and "unreachable" in unreachable.stderr
    assert missing.returncode == 2 and "no API key" in missing.stderr
    assert bad_admin.returncode == 4

    config = Path(cli.env["FLOWGATE_CONFIG"]).with_name("profiles.toml")  # its own file: flows run concurrently
    config.write_text(
        f'[staging]\nurl = "{cli.env["FLOWGATE_URL"]}"\napi_key = "{cli.env["FLOWGATE_API_KEY"]}"\napp = "prof"\n'
    )
    bare = {"FLOWGATE_URL": "", "FLOWGATE_API_KEY": "", "FLOWGATE_APP": "", "FLOWGATE_CONFIG": str(config)}
    published = cli.run("pub", "p", "from a profile", "--profile", "staging", "--json", env=bare)
    assert published.returncode == 0 and json.loads(published.stdout)["topic"].endswith("_prof_p")
    assert cli.run("usage", "--profile", "nope", env=bare).returncode == 2

    script = cli.ok("completion", "bash")
    words = subprocess.run(
        [
            "bash",
            "-c",
            script + '\nCOMP_WORDS=(flowgate queue re); COMP_CWORD=2; _flowgate_complete; echo "${COMPREPLY[@]}"',
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert words.stdout.split() == ["receive"]


FLOWS = [
    piped_lines_are_published_in_order_and_sub_replays_them,
    pub_json_idempotency_and_sub_with_several_filters,
    token_usage_and_help,
    queue_verbs,
    admin_verbs,
    exit_codes_profiles_and_completion,
]


def test_piped_lines_are_published_in_order_and_sub_replays_them(flows: dict[str, Future[None]]) -> None:
    flows["piped_lines_are_published_in_order_and_sub_replays_them"].result()


def test_pub_json_idempotency_and_sub_with_several_filters(flows: dict[str, Future[None]]) -> None:
    flows["pub_json_idempotency_and_sub_with_several_filters"].result()


def test_token_usage_and_help(flows: dict[str, Future[None]]) -> None:
    flows["token_usage_and_help"].result()


def test_queue_verbs(flows: dict[str, Future[None]]) -> None:
    flows["queue_verbs"].result()


def test_admin_verbs(flows: dict[str, Future[None]]) -> None:
    flows["admin_verbs"].result()


def test_exit_codes_profiles_and_completion(flows: dict[str, Future[None]]) -> None:
    flows["exit_codes_profiles_and_completion"].result()
