"""``flowgate serve --workers N``: one supervisor, one embedded NATS, N worker processes on the same ports.

Each worker is a full, stateless replica (``flowgate serve`` with ``FLOWGATE_WORKERS=1``) that binds
the HTTP and MQTT ports with ``SO_REUSEPORT``, so the kernel spreads new connections across them;
everything replicas share lives in JetStream, so what works across replicas works across workers.

The supervisor starts NATS (unless ``FLOWGATE_NATS_URL`` names one), creates the server secrets
once (workers read the same files), reserves the ports when they are 0, then starts the workers and
restarts one that exits unexpectedly (with a backoff when it keeps crashing). SIGTERM and SIGINT
are forwarded to every worker as SIGTERM; once they exited (within the lame-duck window and the grace
period, then killed), NATS stops. Workers get SIGTERM if the supervisor itself dies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field

from flowgate.embedded_nats import EmbeddedNats, stop_with_parent
from flowgate.reuse_port import reuse_port_socket
from gateway.settings import Settings

log = logging.getLogger("flowgate.supervisor")

RESTART_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0)  # seconds before restarting a worker that keeps crashing
STABLE_AFTER = 10.0  # a worker that ran this long counts as healthy again (backoff reset)
FORWARDED = (signal.SIGTERM, signal.SIGINT)


@dataclass
class Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    crashes: int = 0
    restarts: int = 0
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.workers = [Worker(i) for i in range(settings.workers)]
        self._stopping = asyncio.Event()
        self._nats: EmbeddedNats | None = None
        self._env: dict[str, str] = {}

    def run(self) -> int:
        return asyncio.run(self._main())

    async def _main(self) -> int:
        from auth.secrets import ServerSecrets

        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        secrets = ServerSecrets.load(settings)  # once, before the workers read the same files
        if secrets.admin_key_generated:
            print(
                f"\n  Flow-Gate admin key (shown once, stored in {settings.data_dir / 'admin.key'}):\n"
                f"  {secrets.admin_key}\n",
                file=sys.stderr,
                flush=True,
            )
        loop = asyncio.get_running_loop()
        for sig in FORWARDED:
            loop.add_signal_handler(sig, self._on_signal, sig)
        # a port of -1 (a listener that is off) is passed on as it is
        holders = [
            reuse_port_socket(settings.host, port) for port in (settings.http_port, settings.mqtt_port) if port >= 0
        ]
        reserved = iter(holders)
        http_port, mqtt_port = (
            port if port < 0 else int(next(reserved).getsockname()[1])
            for port in (settings.http_port, settings.mqtt_port)
        )
        try:
            if settings.nats_url is None:
                self._nats = EmbeddedNats(settings)
                nats_url = await self._nats.start()
            else:
                nats_url = settings.nats_url
            self._env = self._worker_env(nats_url, http_port, mqtt_port)
            log.info(
                "supervisor %d: %d workers on HTTP %s:%d and MQTT %s:%d, NATS %s",
                os.getpid(),
                len(self.workers),
                settings.host,
                http_port,
                settings.host,
                mqtt_port,
                nats_url,
            )
            for worker in self.workers:
                await self._start(worker)
            await self._stopping.wait()
            await self._stop_workers()
        finally:
            for holder in holders:
                holder.close()
            if self._nats is not None:
                await self._nats.stop()  # last: the workers drained through it
        return 0

    def _worker_env(self, nats_url: str, http_port: int, mqtt_port: int) -> dict[str, str]:
        """The supervisor's environment (where its settings came from) with what makes a worker a worker."""
        return {
            **os.environ,
            "FLOWGATE_WORKERS": "1",
            "FLOWGATE_REUSE_PORT": "true",
            "FLOWGATE_NATS_URL": nats_url,
            "FLOWGATE_HTTP_PORT": str(http_port),
            "FLOWGATE_MQTT_PORT": str(mqtt_port),
        }

    async def _start(self, worker: Worker) -> None:
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "flowgate.cli",
            "serve",
            env=self._env,
            preexec_fn=stop_with_parent,
        )
        worker.started = time.monotonic()
        worker.watcher = asyncio.create_task(self._watch(worker, worker.process))
        log.info("worker %d started (pid %d)", worker.index, worker.process.pid)

    async def _watch(self, worker: Worker, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if self._stopping.is_set():
            return
        ran = time.monotonic() - worker.started
        worker.crashes = 0 if ran > STABLE_AFTER else worker.crashes + 1
        delay = RESTART_BACKOFF[min(worker.crashes, len(RESTART_BACKOFF) - 1)]
        log.warning(
            "worker %d (pid %d) exited with %s after %.1f s; restarting in %.1f s",
            worker.index,
            process.pid,
            code,
            ran,
            delay,
        )
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
            return  # stopping meanwhile
        except TimeoutError:
            pass
        worker.restarts += 1
        await self._start(worker)

    def _on_signal(self, sig: int) -> None:
        self._stopping.set()

    async def _stop_workers(self) -> None:
        """SIGTERM to every worker at once; each drains within the grace period, stragglers are killed."""
        running = [w.process for w in self.workers if w.process is not None and w.process.returncode is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        allowance = self.settings.shutdown_grace_seconds + self.settings.lame_duck_seconds + 5.0
        waits = [asyncio.ensure_future(p.wait()) for p in running]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=allowance)
            for process in running:
                if process.returncode is None:
                    log.warning("worker pid %d did not stop within %.0f s; killing it", process.pid, allowance)
                    process.kill()
            if pending:
                await asyncio.wait(pending)
        for worker in self.workers:
            if worker.watcher is not None:
                worker.watcher.cancel()
