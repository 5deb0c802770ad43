"""Wall-clock time in Unix milliseconds, the unit of every timestamp on the wire (PROTOCOL.md)
and in storage: one home for it, used by the gateway, the backend, the simulators, the
benchmarks and the tests (standard library only, so the gateway's install can import it)."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Now, in whole milliseconds since the Unix epoch (integer arithmetic: no float rounding)."""
    return time.time_ns() // 1_000_000
