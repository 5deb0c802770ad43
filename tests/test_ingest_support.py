"""Helpers for the ingest tests (no tests here): a simulated gateway's outbox that resends
what the backend has not confirmed, as a real gateway does."""

from __future__ import annotations

from anju.uplink import encode_batch, record_body

T0 = 1_790_000_000_000  # ms


class SimOutbox:
    """Records numbered 1..n for one gateway: every ``event_every``-th an event, the rest
    telemetry of ``metrics`` metrics, spread over ``devices`` devices, one per ``step_ms``."""

    def __init__(
        self,
        gateway_id: str,
        n: int,
        *,
        boot: str = "boot-1",
        devices: int = 5,
        metrics: int = 4,
        event_every: int = 10,
        t0: int = T0,
        step_ms: int = 1000,
    ) -> None:
        self.gateway_id = gateway_id
        self.boot = boot
        self.bodies: dict[int, str] = {}
        self.kinds: dict[int, str] = {}
        for seq in range(1, n + 1):
            dev = f"{gateway_id}-dev-{seq % devices}"
            ts = t0 + seq * step_ms
            if event_every and seq % event_every == 0:
                payload: dict[str, object] = {"e": "alarm", "x": {"seq": seq}}
                kind = "e"
            else:
                payload = {"m": {f"m{i}": seq + i / 10 for i in range(metrics)}}
                kind = "t"
            self.kinds[seq] = kind
            self.bodies[seq] = record_body(
                device_id=dev, kind=kind, ts=ts, rx=ts, gateway_timed=False, payload=payload
            )  # type: ignore[arg-type]
        self.unacked = set(self.bodies)
        self.metrics = metrics

    def confirm(self, seqs: list[int]) -> None:
        self.unacked.difference_update(seqs)

    def batches(self, per_batch: int = 50) -> list[bytes]:
        pending = sorted(self.unacked)
        return [
            encode_batch(
                self.gateway_id,
                [(s, self.boot, self.bodies[s]) for s in pending[i : i + per_batch]],
            )
            for i in range(0, len(pending), per_batch)
        ]

    def expected_readings(self) -> int:
        return sum(self.metrics for k in self.kinds.values() if k == "t")

    def expected_events(self) -> int:
        return sum(1 for k in self.kinds.values() if k == "e")
