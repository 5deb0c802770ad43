"""The one backoff helper: capped exponential backoff with full jitter."""

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
