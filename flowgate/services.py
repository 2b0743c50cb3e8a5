"""Build the long-lived services of one gateway process at start-up.

``running_services`` starts (or connects to) NATS, opens the streams and
buckets, and hands a ``Services`` to every front-end; on exit it stops them in
reverse order.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from auth.accounts import Accounts
from auth.revocation_feed import RevocationFeed
from auth.revocations import Revocations
from auth.secrets import ServerSecrets
from auth.tokens import TokenService
from flowgate.embedded_nats import EmbeddedNats
from gateway.billing import BillingGuard
from gateway.bus import Bus
from gateway.draining import Draining
from gateway.events import ConnectionEvents
from gateway.hub import Hub
from gateway.metrics import Metrics
from gateway.publishing import Publisher
from gateway.queues import QueueEngine
from gateway.settings import Settings
from gateway.tracing import Tracing
from gateway.triggers import Triggers
from gateway.webhooks import Webhooks
from protocols.services import Services


@asynccontextmanager
async def running_services(settings: Settings, draining: Draining | None = None) -> AsyncIterator[Services]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    secrets = ServerSecrets.load(settings)
    if secrets.admin_key_generated:
        print(
            f"\n  Flow-Gate admin key (shown once, stored in {settings.data_dir / 'admin.key'}):\n  {secrets.admin_key}\n",
            file=sys.stderr,
            flush=True,
        )
    embedded = EmbeddedNats(settings) if settings.nats_url is None else None
    url = await embedded.start() if embedded is not None else str(settings.nats_url)
    bus = Bus(settings)
    try:
        await bus.connect([u.strip() for u in url.split(",")])
        tracing = Tracing.from_settings(settings)  # None: tracing off (the default)
        hub = Hub(bus, tracing)
        metrics = Metrics(tenant_labels=settings.metrics_tenants)
        accounts = await Accounts.open(bus, secrets)
        guard = await BillingGuard.open(settings, bus, accounts, metrics)
        queues = await QueueEngine.open(settings, bus, secrets, metrics, guard=guard)
        revocations = await RevocationFeed.open(bus, Revocations(settings.token_max_ttl))
        webhooks = await Webhooks.open(settings, bus, metrics, guard, queues)
        services = Services(
            settings=settings,
            secrets=secrets,
            bus=bus,
            hub=hub,
            accounts=accounts,
            tokens=TokenService(
                secrets.token_key,
                default_ttl=settings.token_default_ttl,
                max_ttl=settings.token_max_ttl,
                revocations=revocations.state,
            ),
            publisher=(publisher := Publisher(settings, bus, metrics, guard=guard, local=hub, tracing=tracing)),
            metrics=metrics,
            nats_url=url,
            guard=guard,
            queues=queues,
            draining=draining or Draining(),
            revocations=revocations,
            webhooks=webhooks,
            triggers=await Triggers.open(bus, publisher),
            events=(events := await ConnectionEvents.open(settings, bus, hub)),
        )
        guard.start()
        webhooks.start()
        events.start()
        try:
            yield services
        finally:
            await revocations.close()
            await events.close()
            await webhooks.close()
            await queues.close()
            await hub.close()
            await guard.close()
    finally:
        await bus.close()
        if embedded is not None:
            await embedded.stop()
