"""The rule engine: per-device state, rules dispatched by device kind, in order per device.

``feed`` takes records as they are committed; ``tick`` advances device time between readings so
that a timer (trapped for 30 s) fires on time even when the device has gone quiet.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from anju.registry import CityIndex, DeviceInfo
from anju.uplink import Record
from backend.alerting.lifecycle import AlertBook, Change
from backend.alerting.model import BuildingState, DeviceEvent, DeviceState, Input, Telemetry, Tick
from backend.alerting.rules import RULES_BY_KIND, Rule

log = logging.getLogger("anju.alerting")


class Engine:
    def __init__(
        self,
        city: CityIndex,
        book: AlertBook | None = None,
        rules: Mapping[str, tuple[Rule, ...]] = RULES_BY_KIND,
    ) -> None:
        self.city = city
        self.book = book or AlertBook()
        self.rules = rules
        self.states: dict[str, DeviceState] = {}
        self.buildings: dict[tuple[str, str], BuildingState] = {}
        self._unknown: set[str] = set()
        for device_id, alert_type in self.book.open:
            self.state(device_id).open.add(alert_type)

    def state(self, device_id: str) -> DeviceState:
        st = self.states.get(device_id)
        if st is None:
            st = DeviceState()
            dev = self.city.devices.get(device_id)
            if dev is not None:
                key = (dev.community_id, dev.building or "")
                st.building = self.buildings.setdefault(key, BuildingState())
            self.states[device_id] = st
        return st

    def feed(self, rec: Record, now_ms: int) -> list[Change]:
        dev = self.city.devices.get(rec.device_id)
        if dev is None:
            if rec.device_id not in self._unknown:
                self._unknown.add(rec.device_id)
                log.warning(
                    "records from %s, which is not in the registry: no rules", rec.device_id
                )
            return []
        st = self.state(rec.device_id)
        inp: Input
        if rec.kind == "t" and rec.metrics is not None:
            if rec.ts < st.last_ts:
                return []  # older than what the rules have seen: stored, not evaluated
            st.values.update(rec.metrics)
            inp = Telemetry(rec.device_id, rec.ts, rec.metrics)
        elif rec.kind == "e" and rec.event_type is not None:
            inp = DeviceEvent(rec.device_id, rec.ts, rec.event_type, rec.data or {})
        else:
            return []
        st.last_ts = max(st.last_ts, rec.ts)
        st.offset_ms = rec.rx - rec.ts
        return self._run(dev, st, inp, now_ms)

    def tick(self, now_ms: int) -> list[Change]:
        changes: list[Change] = []
        for device_id, st in self.states.items():
            if not st.since:
                continue
            device_now = now_ms - st.offset_ms
            if device_now <= st.last_ts:
                continue
            dev = self.city.devices[device_id]
            changes.extend(self._run(dev, st, Tick(device_id, device_now), now_ms))
        return changes

    def _run(self, dev: DeviceInfo, st: DeviceState, inp: Input, now_ms: int) -> list[Change]:
        changes: list[Change] = []
        for rule in self.rules.get(dev.kind, ()):
            for decision in rule(dev, st, inp):
                change = self.book.apply(dev, decision, now_ms, self.city.devices)
                if change is not None:
                    self.note(change)
                    changes.append(change)
        return changes

    def note(self, change: Change) -> None:
        """Keep the devices' view of their open alerts in step with the book."""
        st = self.state(change.alert.device.id)
        if change.action == "resolved":
            st.open.discard(change.alert.type)
        else:
            st.open.add(change.alert.type)
