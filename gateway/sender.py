"""Moving records from the outbox to the uplink: windows, pacing, resends, confirmations.

- Each lane has a cursor (the last sequence number read) and a window of records in flight:
  ``outbox.events_window`` for events and statuses, ``outbox.window`` for telemetry. Events
  have their own window so a telemetry backlog waiting for confirmations never holds back an
  alarm, and events are read first on every turn.
- Telemetry is paced by a token bucket of ``outbox.replay_rate`` readings per second, so a
  thousand gateways coming back after an outage do not flatten the backend together.
- What is in flight unconfirmed is sent again (oldest first): events after
  ``outbox.events_resend_after_s`` (2 s), telemetry after ``outbox.resend_after_s`` (10 s). An
  alarm a backend worker took and lost when it was killed (it never confirmed) comes back
  within seconds of the next worker's start; a telemetry backlog is not sent twice meanwhile.
- Confirmations arrive on the uplink's thread (``on_ack``) and are applied here, on the sender's
  thread: the records are deleted from the outbox and leave the window.
- A new uplink connection (``reset``) forgets the windows and reads both lanes from the start:
  everything unconfirmed is sent again; the backend drops the duplicates.
- Batching by time: live telemetry that would fill less than a batch waits up to
  ``outbox.send_linger_ms`` for company (devices that send one reading per message would
  otherwise make batches of one or two). Events never wait.
- A batch holds at most ``outbox.batch_max`` records and ``outbox.batch_bytes_max`` bytes of
  their bodies before compression (at least one record), below the brokers' ``max_packet_size``.
- A lane is read only when the outbox holds something past its cursor (``Outbox.last_seq``, in
  memory): an idle turn costs no query.

The windows bound what is handed to paho at any time, so paho's internal queue never grows past
``window / batch_max + events_window`` messages.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable
from itertools import accumulate
from operator import itemgetter

from anju.uplink import compress_batch, encode_batch
from gateway.config import OutboxConfig
from gateway.metrics import GatewayMetrics
from gateway.outbox import EVENTS, TELEMETRY, Outbox, Row

Publish = Callable[[bytes, bool], bool]  # (payload, events only) -> taken
_BODY = itemgetter(2)


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved; rate 0 means no limit."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = now

    def available(self, now: float) -> float:
        if self.rate <= 0:
            return float("inf")
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return self.tokens

    def spend(self, n: int) -> None:
        if self.rate > 0:
            self.tokens -= n

    def wait_for(self, n: float) -> float:
        """Seconds until ``n`` tokens are there."""
        if self.rate <= 0 or self.tokens >= n:
            return 0.0
        return (n - self.tokens) / self.rate


class Sender:
    def __init__(
        self,
        outbox: Outbox,
        cfg: OutboxConfig,
        gateway_id: str,
        metrics: GatewayMetrics,
        *,
        compress: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.outbox = outbox
        self.cfg = cfg
        self.gateway_id = gateway_id
        self.metrics = metrics
        self.compress = compress
        self.clock = clock
        self._cursor = [0, 0]
        # Per lane: seq -> when sent (last), oldest first.
        self._flight: tuple[OrderedDict[int, float], ...] = (OrderedDict(), OrderedDict())
        self._resend_after = [0.0, 0.0]
        self._resend_after[EVENTS] = cfg.events_resend_after_s
        self._resend_after[TELEMETRY] = cfg.resend_after_s
        self._acks: list[int] = []
        self._acks_lock = threading.Lock()
        self._linger_s = cfg.send_linger_ms / 1000
        self._tel_waiting_since: float | None = None  # live telemetry lingering since
        self.bucket = TokenBucket(cfg.replay_rate, max(cfg.replay_rate, cfg.batch_max), clock())

    @property
    def lingering(self) -> bool:
        """Live telemetry is waiting for company until a deadline the sender loop sleeps to:
        a commit of more telemetry meanwhile need not wake it (read from other threads)."""
        return self._tel_waiting_since is not None

    @property
    def inflight(self) -> int:
        return sum(map(len, self._flight))

    def reset(self) -> None:
        """A new connection: send everything unconfirmed again, from the start."""
        self._cursor = [0, 0]
        for f in self._flight:
            f.clear()
        self._tel_waiting_since = None

    def on_ack(self, seqs: list[int]) -> None:
        """From the uplink's thread."""
        with self._acks_lock:
            self._acks.extend(seqs)

    def apply_acks(self) -> int:
        with self._acks_lock:
            seqs, self._acks = self._acks, []
        if not seqs:
            return 0
        n = self.outbox.confirm(seqs)
        ev, tel = self._flight
        for s in seqs:
            if ev.pop(s, None) is None:
                tel.pop(s, None)
        self.metrics.confirmed.inc(n)
        return n

    def _cap(self, rows: list[Row]) -> list[Row]:
        """The first rows whose bodies fit in ``batch_bytes_max`` (at least one). The brokers'
        limit (4 MiB) leaves room for each record's sequence number and boot id."""
        if not rows:
            return rows
        totals = list(accumulate(map(len, map(_BODY, rows))))  # (in C: no Python per row)
        if totals[-1] <= self.cfg.batch_bytes_max:
            return rows
        return rows[: max(1, bisect_right(totals, self.cfg.batch_bytes_max))]

    def _linger(self, room: int) -> float:
        """Seconds live telemetry should still wait for a fuller batch (0: send now)."""
        if self._linger_s <= 0:
            return 0.0
        unsent = self.outbox.lane_depth(TELEMETRY) - len(self._flight[TELEMETRY])
        if unsent >= room:
            return 0.0
        now = self.clock()
        if self._tel_waiting_since is None:
            self._tel_waiting_since = now
        return max(0.0, self._tel_waiting_since + self._linger_s - now)

    def _send(self, rows: list[Row], lane: int, publish: Publish, *, resend: bool) -> bool:
        payload = encode_batch(self.gateway_id, rows)
        if self.compress:
            payload = compress_batch(payload)
        if not publish(payload, lane == EVENTS):
            return False
        now = self.clock()
        flight = self._flight[lane]
        for seq, _b, _body in rows:
            if seq in flight:
                flight.move_to_end(seq)
            flight[seq] = now
        self.metrics.sent.inc(len(rows))
        self.metrics.uplink_bytes.inc(len(payload))
        if resend:
            self.metrics.resent.inc(len(rows))
        return True

    def pump(self, publish: Publish, *, hold_telemetry: bool = False) -> float:
        """Send what the windows and the pace allow. Returns how long the caller may sleep
        before there is more to do (0.25 s when only waiting for confirmations)."""
        self.apply_acks()
        cfg = self.cfg
        # Resends: the oldest in flight first, events first.
        for lane in (EVENTS, TELEMETRY):
            if not self._resend(lane, publish):
                return 0.25
        ev_flight, tel_flight = self._flight
        # Events, ahead of any telemetry.
        while (
            len(ev_flight) < cfg.events_window
            and self.outbox.last_seq(EVENTS) > self._cursor[EVENTS]
        ):
            room = min(cfg.batch_max, cfg.events_window - len(ev_flight))
            rows = self._cap(self.outbox.read(EVENTS, self._cursor[EVENTS], room))
            if not rows:
                break
            if not self._send(rows, EVENTS, publish, resend=False):
                return 0.25
            self._cursor[EVENTS] = rows[-1][0]
        if hold_telemetry:
            return 0.25
        # Telemetry, paced.
        while (
            len(tel_flight) < cfg.window
            and self.outbox.last_seq(TELEMETRY) > self._cursor[TELEMETRY]
        ):
            now = self.clock()
            tokens = self.bucket.available(now)
            room = min(cfg.batch_max, cfg.window - len(tel_flight))
            if tokens < min(room, max(1.0, cfg.replay_rate / 20)):
                return max(0.005, self.bucket.wait_for(min(room, max(1.0, cfg.replay_rate / 20))))
            wait = self._linger(room)
            if wait > 0:
                return wait
            rows = self.outbox.read(TELEMETRY, self._cursor[TELEMETRY], int(min(room, tokens)))
            rows = self._cap(rows)
            if not rows:
                self._tel_waiting_since = None
                break
            if not self._send(rows, TELEMETRY, publish, resend=False):
                return 0.25
            self.bucket.spend(len(rows))
            self._cursor[TELEMETRY] = rows[-1][0]
            self._tel_waiting_since = None
        due = [
            next(iter(f.values())) + self._resend_after[lane]
            for lane, f in enumerate(self._flight)
            if f
        ]
        if due:
            return max(0.01, min(0.25, min(due) - self.clock()))
        return 0.25

    def _resend(self, lane: int, publish: Publish) -> bool:
        """Send again what of ``lane`` is unconfirmed for longer than its timeout (a batch at
        most, the oldest first); False when the uplink did not take it."""
        flight = self._flight[lane]
        stale_before = self.clock() - self._resend_after[lane]
        stale: list[int] = []
        for seq, t in flight.items():
            if t >= stale_before or len(stale) >= self.cfg.batch_max:
                break
            stale.append(seq)
        if not stale:
            return True
        found = self.outbox.read_seqs(stale)
        here = {r[0] for r in found}
        for seq in stale:
            if seq not in here:  # confirmed meanwhile, or dropped for the budget
                del flight[seq]
        rows = self._cap(found)
        return not rows or self._send(rows, lane, publish, resend=True)
