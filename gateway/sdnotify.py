"""systemd's notification protocol, spoken directly on ``$NOTIFY_SOCKET`` (no dependency).

``READY=1`` once the gateway runs, ``WATCHDOG=1`` from the sender loop (at most every half of
``$WATCHDOG_USEC``), ``STOPPING=1`` on the way out. Outside systemd every call does nothing.

The sender loop calls ``watchdog`` only while the gateway is healthy: intake, commit, send and
the uplink thread have all marked progress within ``supervision.stall_s``
(``gateway.supervise``). A stuck committer therefore stops the pings and systemd restarts the
gateway after ``WatchdogSec``, although the sender loop itself still turns.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self) -> None:
        addr = os.environ.get("NOTIFY_SOCKET", "")
        self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = os.environ.get("WATCHDOG_USEC", "")
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() else None
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self._addr)

    def notify(self, state: str) -> bool:
        if not self._addr:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(state.encode(), self._addr)
        except OSError:
            return False
        return True

    def ready(self) -> None:
        self.notify(f"READY=1\nMAINPID={os.getpid()}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")

    def watchdog(self) -> None:
        """Called on every turn of the sender loop; pings at most every half period."""
        if self.watchdog_s is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= min(self.watchdog_s / 2, 5.0):
            self._last_ping = now
            self.notify("WATCHDOG=1")
