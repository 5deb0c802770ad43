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

A step of the wall clock (it moved against the boot-time clock, ``CLOCK_BOOTTIME``, by more
than ``STEP_MS``) once it had been trusted is held back: ``wall_ms`` keeps counting from the
last trusted time until the step has held for ``STEP_ACCEPT_S``, then takes it. A clock that
jumps hours ahead or a day back and comes back (a bad NTP answer, a ``date -s``, a flaky RTC)
changes no record's time: no device is blamed for a skew that is the gateway's, no correct
device time is replaced for being "a day ahead", no liveness is pushed into the future. A
correction that holds (NTP setting a clock that was wrong while "plausible") is taken a minute
late. Before the clock is first trusted (``kernel`` mode before the first sync) every step is
taken at once: that is how the clock gets set, and ``Outbox.restamp`` corrects what came
before.

Tests and ``anju chaos`` only: ``ANJU_GATEWAY_CLOCK_SKEW_FILE`` names a file holding an integer
of milliseconds that ``wall_ms`` adds to the system clock (a clock jump without root). The file
is read again when its modification time changes, looked at no more than once a second; unset
(production), nothing is read and nothing checked. Setting it logs a warning at start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
from pathlib import Path
from typing import Final, Literal

from gateway.outbox import ClockStamp

log = logging.getLogger("anju.gateway.clock")

SyncMode = Literal["kernel", "plausible", "assume"]
SKEW_FILE_ENV: Final = "ANJU_GATEWAY_CLOCK_SKEW_FILE"
STEP_MS: Final = 1_000  # NTP slews at most 0.5 ms/s: a larger move between two reads is a step
STEP_ACCEPT_S: Final = 60.0
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


def _steady_ns() -> int:
    """Nanoseconds since boot, suspend included (a resumed laptop is not a clock step)."""
    try:
        return time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):
        return time.monotonic_ns()


class SkewFile:
    """``ANJU_GATEWAY_CLOCK_SKEW_FILE`` (tests and ``anju chaos`` only): an offset in ms."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset_ms = 0
        self._mtime: int | None = None
        self._looked_ns = -(10**18)

    def offset(self, mono_ns: int) -> int:
        if mono_ns - self._looked_ns >= 1_000_000_000:
            self._looked_ns = mono_ns
            try:
                mtime: int | None = self.path.stat().st_mtime_ns
            except OSError:
                mtime = None
            if mtime != self._mtime:
                self._mtime = mtime
                before = self.offset_ms
                try:
                    self.offset_ms = int(self.path.read_text(encoding="ascii").strip() or 0)
                except (OSError, ValueError) as exc:
                    log.warning("%s: %s; no skew", SKEW_FILE_ENV, exc)
                    self.offset_ms = 0
                if self.offset_ms != before:
                    log.warning("%s: the wall clock skewed by %d ms", SKEW_FILE_ENV, self.offset_ms)
        return self.offset_ms


class SystemClock:
    """The gateway's clocks (wall and monotonic) and whether the wall clock is trusted."""

    def __init__(self, mode: SyncMode = "plausible", not_before_ms: int = 0) -> None:
        self.mode = mode
        self.not_before_ms = not_before_ms
        self.kernel_boot = kernel_boot_id()
        self.skew: SkewFile | None = None
        path = os.environ.get(SKEW_FILE_ENV)
        if path:
            self.skew = SkewFile(Path(path))
            log.warning(
                "%s=%s: the wall clock is skewed by that file's milliseconds (tests only)",
                SKEW_FILE_ENV,
                path,
            )
        # The step filter: the wall-minus-steady offset last taken, a step seen (its offset
        # and since when, steady ns), and whether the clock was ever trusted.
        self._anchor_ms: int | None = None
        self._step: tuple[int, int] | None = None
        self._was_trusted = mode == "assume"
        self.steps_held = 0  # steps held back (tests, logs)
        self._lock = threading.Lock()

    def wall_ms(self) -> int:
        with self._lock:  # one thread's step seen by all (uncontended: well under 1 us)
            wall_ns = time.time_ns()
            steady_ns = _steady_ns()
            wall = wall_ns // 1_000_000
            if self.skew is not None:
                wall += self.skew.offset(steady_ns)
            steady = steady_ns // 1_000_000
            off = wall - steady
            anchor = self._anchor_ms
            if anchor is None or abs(off - anchor) <= STEP_MS:
                self._anchor_ms = off  # (follows NTP's slewing)
                if self._step is not None:
                    self._step = None
                    log.warning("the wall clock is back from its step: no record's time changed")
                return wall
            return self._stepped(wall, steady, steady_ns, off, anchor)

    def _stepped(self, wall: int, steady: int, steady_ns: int, off: int, anchor: int) -> int:
        # Taken at once: a clock never trusted yet (being set), or in ``kernel`` mode a step
        # the kernel calls synchronised (its NTP client set it; ``date -s`` unsynchronises).
        if not self._was_trusted or (self.mode == "kernel" and kernel_clock_synced()):
            self._anchor_ms, self._step = off, None
            return wall
        step = self._step
        if step is None or abs(off - step[0]) > STEP_MS:
            self._step = step = (off, steady_ns)
            self.steps_held += 1
            log.warning(
                "the wall clock stepped by %+.0f s: held back (records keep the last trusted "
                "time) unless the step holds for %.0f s",
                (off - anchor) / 1000,
                STEP_ACCEPT_S,
            )
        if steady_ns - step[1] >= STEP_ACCEPT_S * 1e9:
            log.warning("the wall clock's step of %+.0f s held: taken", (off - anchor) / 1000)
            self._anchor_ms, self._step = off, None
            return wall
        return steady + anchor

    def mono_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def trusted(self) -> bool:
        ok = self._trusted()
        if ok:
            self._was_trusted = True
        return ok

    def _trusted(self) -> bool:
        if self.mode == "assume":
            return True
        if self.wall_ms() < self.not_before_ms:
            return False
        return self.mode == "plausible" or kernel_clock_synced() is not False

    def stamp(self) -> ClockStamp:
        return ClockStamp(self.trusted(), self.kernel_boot, self.wall_ms() - self.mono_ms())
