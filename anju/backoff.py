"""The one backoff helper: capped exponential backoff with full jitter, and decorrelated jitter
for reconnecting soon after a short outage."""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff(
    base_s: float = 0.2, cap_s: float = 10.0, rng: random.Random | None = None
) -> Iterator[float]:
    """Delays for successive retries: uniform in [0, min(cap, base * 2**n)]."""
    r = rng or random.Random()
    n = 0
    while True:
        yield r.uniform(0, min(cap_s, base_s * (2**n)))
        n = min(n + 1, 30)


def decorrelated(
    base_s: float = 1.0, cap_s: float = 4.0, rng: random.Random | None = None
) -> Iterator[float]:
    """Decorrelated jitter: each delay uniform in [base, 3 * the previous one], at most ``cap``.
    Delays stay between ``base`` and ``cap`` and differ from one client to the next, so clients
    cut off together come back spread over the cap instead of in the same second."""
    r = rng or random.Random()
    low = min(base_s, cap_s)
    delay = low
    while True:
        delay = min(cap_s, r.uniform(low, max(low, delay * 3)))
        yield delay
