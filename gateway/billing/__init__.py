"""Plans, usage metering, rate limiting and the billing guard every front-end calls.

``plans`` (what a user may do, unit prices), ``limiter`` (token buckets),
``ledger`` (units reserved per user and period, prepaid balance, in KV),
``meter`` (usage per user, app and period, flushed to KV), ``share`` (replicas
telling each other their rate spend), ``guard`` (the API front-ends call: a
facade over ``cache``, ``admission``, ``reservations``, ``rates``,
``token_requests``, ``connections``, ``report`` and ``peers``).
"""

from gateway.billing.guard import BillingGuard, ConnectionLease
from gateway.billing.limiter import RateLimiter, RateState
from gateway.billing.plans import Catalog, Operation, Plan, Prices

__all__ = ["BillingGuard", "Catalog", "ConnectionLease", "Operation", "Plan", "Prices", "RateLimiter", "RateState"]
