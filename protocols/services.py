"""The long-lived services of one gateway process, handed to every front-end.

Built once at start-up by ``flowgate.services.running_services`` (the assembly).
"""

from __future__ import annotations

from dataclasses import dataclass

from auth.accounts import Accounts
from auth.revocation_feed import RevocationFeed
from auth.secrets import ServerSecrets
from auth.tokens import TokenService
from gateway.billing import BillingGuard
from gateway.bus import Bus
from gateway.draining import Draining
from gateway.events import ConnectionEvents
from gateway.hub import Hub
from gateway.metrics import Metrics
from gateway.publishing import Publisher
from gateway.queues import QueueEngine
from gateway.settings import Settings
from gateway.triggers import Triggers
from gateway.webhooks import Webhooks


@dataclass(frozen=True)
class Services:
    settings: Settings
    secrets: ServerSecrets
    bus: Bus
    hub: Hub
    accounts: Accounts
    tokens: TokenService
    publisher: Publisher
    metrics: Metrics
    nats_url: str
    guard: BillingGuard
    queues: QueueEngine
    draining: Draining
    revocations: RevocationFeed
    webhooks: Webhooks
    triggers: Triggers
    events: ConnectionEvents
