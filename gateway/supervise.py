"""Supervision of the gateway's long-lived threads: progress marks, deadlines, and failure.

Every part of the alarm path (``intake``: the LAN network thread, ``commit``: the committer,
``send``: the sender loop, ``uplink``: the uplink's network thread) marks its progress on every
turn of its loop (``Progress.beat``); a loop that waits for work still turns at least every
second. A part whose last mark is older than its deadline is *stalled*. The southbound
adapters add theirs when configured (``Progress.add``): ``adapters`` (their sink's committer)
and ``gbt_accept`` (the GB/T 26875.3 server's accept loop).

- The systemd watchdog is pinged, and the retained state says ``"online": true``, only while no
  part is stalled: a stuck committer stops the pings, systemd restarts the gateway.
- A part that cannot recover from an exception calls ``fail``; the sender loop sees it and
  ``Gateway.run`` raises ``GatewayFailure``, so the process exits non-zero (systemd or the demo
  starts it again). A part stalled for ``supervision.exit_after_s`` is a failure too (outside
  systemd nobody else would notice).

``Restarts`` is the policy for exceptions a loop can survive: each one is logged and counted in
``anju_gateway_thread_errors_total{thread}``; more than ``max_errors`` within ``window_s``
seconds is a failure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from gateway.errors import GatewayError

log = logging.getLogger("anju.gateway.supervise")

PARTS = ("intake", "commit", "send", "uplink")


class GatewayFailure(GatewayError):
    """A part of the gateway failed beyond recovery; the process must be restarted."""

    def __init__(self, part: str, detail: str) -> None:
        super().__init__(f"gateway part {part!r} failed: {detail}")
        self.part = part
        self.detail = detail


class Progress:
    """Last progress mark of each part (monotonic seconds), and the first failure."""

    def __init__(
        self,
        deadline_s: float,
        parts: Iterable[str] = PARTS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.deadline_s = deadline_s
        self.clock = clock
        now = clock()
        self._last = dict.fromkeys(parts, now)
        self.failure: GatewayFailure | None = None
        self._failed = threading.Event()

    def add(self, part: str) -> None:
        """Supervise one more part (an adapter's thread), as of now."""
        self._last[part] = self.clock()

    def beat(self, part: str) -> None:
        # One dict store: atomic under the GIL, cheap enough for every message.
        self._last[part] = self.clock()

    def stalled(self) -> list[str]:
        """Parts whose last mark is older than the deadline (oldest first)."""
        limit = self.clock() - self.deadline_s
        return sorted((p for p, t in self._last.items() if t < limit), key=self._last.__getitem__)

    def stalled_for(self) -> float:
        """Seconds since the oldest part's last mark."""
        return self.clock() - min(self._last.values())

    def healthy(self) -> bool:
        return self.failure is None and not self.stalled()

    def fail(self, part: str, detail: str) -> None:
        if self.failure is None:
            self.failure = GatewayFailure(part, detail)
            log.critical("%s", self.failure)
        self._failed.set()

    @property
    def failed(self) -> bool:
        return self._failed.is_set()


class Restarts:
    """Counts a loop's exceptions; ``allow`` says whether it may carry on after one more."""

    def __init__(
        self,
        part: str,
        progress: Progress,
        on_error: Callable[[], object],
        *,
        max_errors: int = 5,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.part = part
        self.progress = progress
        self.on_error = on_error  # counts it (the metric)
        self.max_errors = max_errors
        self.window_s = window_s
        self.clock = clock
        self._times: deque[float] = deque()

    def allow(self, exc: BaseException) -> bool:
        """Log and count ``exc``; False (and the part failed) when there were too many."""
        now = self.clock()
        self._times.append(now)
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()
        self.on_error()
        log.error("%s: unexpected %s: %s", self.part, type(exc).__name__, exc, exc_info=exc)
        if len(self._times) > self.max_errors:
            self.progress.fail(
                self.part,
                f"{len(self._times)} errors within {self.window_s:.0f} s, "
                f"the last {type(exc).__name__}: {exc}",
            )
            return False
        return True
