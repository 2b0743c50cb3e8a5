"""Driving wrk from Python: a POST script, and parsing its --latency report."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson


@dataclass(frozen=True)
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int


def _found(match: re.Match[str] | None, what: str) -> re.Match[str]:
    if match is None:
        raise ValueError(f"no {what} in wrk's report")
    return match


def _ms(value: str) -> float:
    number, unit = _found(re.fullmatch(r"([\d.]+)(us|ms|s|m)", value), "latency").groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def post_script(path: str, body: Mapping[str, object], headers: Mapping[str, str]) -> Path:
    lines = ['wrk.method = "POST"', f"wrk.body = {orjson.dumps(orjson.dumps(body).decode()).decode()}"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text("\n".join(lines) + "\n")
    return script


def run(url: str, script: Path, *, seconds: int, connections: int, threads: int = 2) -> WrkResult:
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    out = subprocess.run(
        [binary, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(_found(re.search(r"Requests/sec:\s+([\d.]+)", out), "Requests/sec")[1])
    p50 = _ms(_found(re.search(r"\s50%\s+(\S+)", out), "50th percentile")[1])
    p99 = _ms(_found(re.search(r"\s99%\s+(\S+)", out), "99th percentile")[1])
    non_2xx = int(m[1]) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    errors = (
        sum(int(x) for x in m.groups())
        if (m := re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", out))
        else 0
    )
    return WrkResult(rps, p50, p99, non_2xx, errors)
