"""Time on a Raspberry Pi without a real-time clock.

At boot the Pi's wall clock is wrong (1970, or the time fake-hwclock saved at the last
shutdown) until NTP sets it. The gateway records, with every group it stores, whether the clock
was trusted, the kernel boot id and the offset between the wall clock and the monotonic clock.
Once the clock is trusted, records from the same kernel boot get their times corrected
(``Outbox.restamp``); records from an earlier kernel boot cannot be corrected and are flagged.

How "trusted" is decided (``clock.sync`` in the configuration):

- ``kernel``: the kernel says the clock is synchronised (``adjtimex`` does not return
  ``TIME_ERROR``; systemd-timesyncd and chrony clear it when they set the clock) and the time
  is after ``clock.not_before``. Use this on a Pi.
- ``plausible``: the time is after ``clock.not_before`` (default; enough where the clock is
  kept by the host, as in a container or on a PC).
- ``assume``: always trusted.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from pathlib import Path
from typing import Final, Literal

from gateway.outbox import ClockStamp

SyncMode = Literal["kernel", "plausible", "assume"]
_TIME_ERROR: Final = 5
_BOOT_ID: Final = Path("/proc/sys/kernel/random/boot_id")


class _Timex(ctypes.Structure):
    # struct timex starts with `unsigned int modes`; the rest is only read by the kernel's
    # answer, so a generous zeroed tail is enough (modes = 0: read only, no privilege needed).
    _fields_ = [("modes", ctypes.c_uint), ("_rest", ctypes.c_byte * 512)]


def kernel_clock_synced() -> bool | None:
    """True/False from ``adjtimex(2)``; None where it is unavailable."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        state = libc.adjtimex(ctypes.byref(_Timex()))
    except (OSError, AttributeError):
        return None
    return bool(state >= 0 and state != _TIME_ERROR)


def kernel_boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return "unknown"


class SystemClock:
    """The gateway's clocks (wall and monotonic) and whether the wall clock is trusted."""

    def __init__(self, mode: SyncMode = "plausible", not_before_ms: int = 0) -> None:
        self.mode = mode
        self.not_before_ms = not_before_ms
        self.kernel_boot = kernel_boot_id()

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def mono_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def trusted(self) -> bool:
        if self.mode == "assume":
            return True
        if self.wall_ms() < self.not_before_ms:
            return False
        return self.mode == "plausible" or kernel_clock_synced() is not False

    def stamp(self) -> ClockStamp:
        return ClockStamp(self.trusted(), self.kernel_boot, self.wall_ms() - self.mono_ms())
