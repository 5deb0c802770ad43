"""The rule engine: per-device state, rules dispatched by device kind, in order per device,
and the behaviour every rule shares (ALERTS.md): flapping held open, storm summaries,
suppression of device alerts under a dead gateway, timers between readings.

``feed`` takes records as they are committed; ``tick`` advances device time between readings
so that a timer (trapped for 30 s) fires on time even when the device has gone quiet, checks
liveness and acknowledgement deadlines. Everything here is pure bookkeeping: the service
stores and publishes the changes it returns, and persists ``snapshot()`` of the dirty states.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from anju.registry import CityIndex, DeviceInfo
from anju.uplink import Record
from backend.alerting import catalog
from backend.alerting.late import judge, place_of
from backend.alerting.lifecycle import Alert, AlertBook, Change, Deadlines
from backend.alerting.model import (
    BuildingState,
    Clear,
    Decision,
    DeviceEvent,
    DeviceState,
    Input,
    Raise,
    Status,
    Telemetry,
    Tick,
    Update,
)
from backend.alerting.rules import ALL_INPUTS, EVENT_PAIRS, INPUTS, RULES_BY_KIND, Rule
from backend.alerting.rules_common import ms, resolved_params
from backend.alerting.rules_health import GATEWAY_OFFLINE, OFFLINE, TRANSMISSION, liveness
from backend.alerting.storm import Storms, pseudo_device

log = logging.getLogger("anju.alerting")
_HELD = "held:"  # st.since key of an alert held open because it flapped
_FLAPS = "flaps:"  # st.mem key of recent clear times
_EVENT_MARK = "ev"  # st.mem key: the place (late.place_of) of the last evaluated event
_EVENT_MARKS_BEFORE = "ev_boots"  # ... of the gateway boots before it, newest first
_LEGACY_MARK_BEFORE = "ev_before"  # (one boot before, as stored by an earlier version)
_BOOTS_MARKED = 4


def _marks(st: DeviceState) -> list[list[Any]]:
    """The event marks of a device's gateway boots, newest first."""
    mem = st.mem
    first = mem.get(_EVENT_MARK)
    out = [first] if first is not None else []
    out += mem.get(_EVENT_MARKS_BEFORE, [])
    legacy = mem.get(_LEGACY_MARK_BEFORE)
    return [*out, legacy] if legacy is not None else out


@dataclass(frozen=True, slots=True)
class Shared:
    """Deployment-wide thresholds of the shared behaviour (ALERTS.md)."""

    flap_cycles: int = catalog.FLAP_CYCLES
    flap_window_ms: int = catalog.FLAP_WINDOW_MS
    storm_count: int = catalog.STORM_COUNT
    storm_window_ms: int = catalog.STORM_WINDOW_MS
    gateway_silent_ms: int = catalog.GATEWAY_SILENT_MS
    deadlines: Deadlines = field(default_factory=Deadlines)


@dataclass(slots=True)
class GatewayWatch:
    online: bool
    last_seen: int


class Engine:
    def __init__(
        self,
        city: CityIndex,
        book: AlertBook | None = None,
        rules: Mapping[str, tuple[Rule, ...]] = RULES_BY_KIND,
        *,
        params: Mapping[str, Mapping[str, float]] | None = None,
        shared: Shared | None = None,
        now_ms: int = 0,
        on_late: Callable[[], object] | None = None,
    ) -> None:
        self.city = city
        self.book = book or AlertBook()
        self.rules = rules
        # Dispatch once: the rules of each device kind that react to each kind of input, in
        # catalog order (``rules.INPUTS``; a rule skipped for an input would have returned
        # nothing and left the state alone).
        self.dispatch: dict[tuple[str, type], tuple[Rule, ...]] = {
            (kind, t): tuple(r for r in kind_rules if t in INPUTS.get(r, ALL_INPUTS))
            for kind, kind_rules in rules.items()
            for t in ALL_INPUTS
        }
        self.on_late = on_late  # told of each late paired event (backend.alerting.late)
        self.shared = shared or Shared()
        deploy = params or {}
        # Registry params over the deployment's (its kind's over "*") over the catalog's.
        self.devices: dict[str, DeviceInfo] = {
            d.id: replace(
                d,
                params=resolved_params(
                    d.kind, d.params, {**deploy.get("*", {}), **deploy.get(d.kind, {})}
                ),
            )
            for d in city.devices.values()
        }
        self.states: dict[str, DeviceState] = {}
        self.buildings: dict[tuple[str, str], BuildingState] = {}
        # Gateways are watched once heard from (a state message or a record).
        self.gateways: dict[str, GatewayWatch] = {}
        self.storms = Storms(self.shared.storm_count, self.shared.storm_window_ms)
        self.dirty: set[str] = set()  # states changed since the last snapshot
        self.urgent: set[str] = set()  # ... whose timers or open alerts changed
        self._unknown: set[str] = set()
        self._skew_bound: dict[str, int] = {}  # clock_skew_s of each device, in ms
        for alert in self.book.open.values():
            self._track(alert, now_ms)

    def _track(self, alert: Alert, now_ms: int) -> None:
        """An open alert in the book: what the rules keep of it."""
        if alert.device.kind == "gateway":
            self.gateways[alert.device.id] = GatewayWatch(False, now_ms)
        elif alert.device.kind == "community":
            self.storms.restore(alert)
        elif alert.device.id in self.devices:
            self.state(alert.device.id).open.add(alert.type)

    def adopt(
        self, alerts: Iterable[Alert], docs: Mapping[str, Mapping[str, Any]], now_ms: int
    ) -> None:
        """Take over some communities' open alerts and stored rule states (a worker taking a
        partition of the city: ``backend.partitions``), with nothing else evaluating them."""
        for alert in alerts:
            self.book.load(alert)
            self._track(alert, now_ms)
        self.restore(docs)

    # ---- state ---------------------------------------------------------------------------

    def state(self, device_id: str) -> DeviceState:
        st = self.states.get(device_id)
        if st is None:
            st = DeviceState()
            dev = self.devices.get(device_id)
            if dev is not None:
                key = (dev.community_id, dev.building or "")
                st.building = self.buildings.setdefault(key, BuildingState())
            self.states[device_id] = st
        return st

    def snapshot(self, keys: set[str]) -> dict[str, dict[str, Any]]:
        """JSON documents of the given device states (and of their buildings)."""
        out: dict[str, dict[str, Any]] = {}
        for device_id in keys:
            st = self.states.get(device_id)
            dev = self.devices.get(device_id)
            if st is None or dev is None:
                continue
            out[device_id] = st.to_json()
            if dev.building is not None:
                out[f"building:{dev.community_id}/{dev.building}"] = st.building.to_json()
        return out

    def restore(self, docs: Mapping[str, Mapping[str, Any]]) -> None:
        """Load states written by ``snapshot`` (after a restart). Open alert types come from
        the book (the alerts table), not from the snapshot."""
        for key, doc in docs.items():
            if key.startswith("building:"):
                community, _, building = key[len("building:") :].partition("/")
                b = self.buildings.setdefault((community, building), BuildingState())
                b.load_json(doc)
            elif key in self.devices:
                st = self.state(key)
                open_now = set(st.open)
                st.load_json(doc)
                st.open = open_now | {t for t in st.open if self._held(key, t)}

    def _held(self, device_id: str, alert_type: str) -> bool:
        return self.book.is_open(device_id, alert_type)

    # ---- input ---------------------------------------------------------------------------

    def feed(self, rec: Record, now_ms: int) -> list[Change]:
        gw = self.gateways.get(rec.gateway_id)
        changes: list[Change] = []
        if gw is None:
            if rec.gateway_id in self.city.gateway_community:
                self.gateways[rec.gateway_id] = GatewayWatch(True, now_ms)
        else:
            gw.last_seen = now_ms
            if not gw.online:
                changes += self.gateway_state(rec.gateway_id, True, now_ms)
        dev = self.devices.get(rec.device_id)
        if dev is None:
            if rec.device_id not in self._unknown:
                self._unknown.add(rec.device_id)
                log.warning(
                    "records from %s, which is not in the registry: no rules", rec.device_id
                )
            return changes
        st = self.state(rec.device_id)
        # The rules' time (``_rules_time``), its common case inline: this runs per record.
        ts, rx = rec.ts, rec.rx
        bound = self._skew_bound.get(rec.device_id)
        if (
            bound is None
            or st.last_ts - rx > bound
            or not -bound <= rx - ts <= bound
            or "skew_ms" in st.mem
        ):
            ts = self._rules_time(dev, st, rec)
        inp: Input
        if rec.kind == "t" and rec.metrics is not None:
            if ts < st.last_ts:
                return changes  # older than what the rules have seen: stored, not evaluated
            st.values.update(rec.metrics)
            inp = Telemetry(rec.device_id, ts, rec.metrics)
        elif rec.kind == "e" and rec.event_type is not None:
            # Events are evaluated in order per device; a resent one at or below the last
            # evaluated sequence of the same gateway boot was seen already (evaluating it again
            # after a later reset would raise a cleared alarm a second time).
            # (The marks of the last gateway boots seen, newest first: after a gateway
            # restart, resends of old boots and new events of the new one arrive interleaved.)
            marks = _marks(st)
            mark = next((m for m in marks if m[0] == rec.gateway_id and m[1] == rec.boot_id), None)
            if mark is not None:
                if rec.seq <= mark[2]:
                    if rec.repeat:
                        return changes
                else:
                    mark[2:] = [rec.seq, rec.rx]
            else:
                place = place_of(rec.gateway_id, rec.boot_id, rec.seq, rec.rx)
                st.mem[_EVENT_MARK] = place
                st.mem[_EVENT_MARKS_BEFORE] = marks[: _BOOTS_MARKED - 1]
                st.mem.pop(_LEGACY_MARK_BEFORE, None)
            inp = DeviceEvent(rec.device_id, ts, rec.event_type, rec.data or {})
        elif rec.kind == "s" and rec.status is not None:
            inp = Status(rec.device_id, max(ts, st.last_ts), rec.status)
        else:
            return changes
        st.last_rx = max(st.last_rx, rec.rx)
        if rec.kind != "s":
            st.last_ts = max(st.last_ts, ts)
            st.offset_ms = rec.rx - ts
            if rec.gateway_timed:
                st.mem["gw_timed"] = 1
            elif "gw_timed" in st.mem:
                del st.mem["gw_timed"]
        if isinstance(inp, DeviceEvent) and dev.kind in EVENT_PAIRS:
            changes += self._paired(dev, st, inp, rec, now_ms)
        else:
            changes += self._run(dev, st, inp, now_ms)
        if OFFLINE in st.open or TRANSMISSION in st.open:
            # Heard again (liveness raises only from the tick; here it can only clear).
            alive = liveness(dev, st, now_ms)
            if isinstance(alive, Clear):
                changes += self._apply(dev, st, alive, rec.ts, now_ms)
        return changes

    def _paired(
        self, dev: DeviceInfo, st: DeviceState, inp: DeviceEvent, rec: Record, now_ms: int
    ) -> list[Change]:
        """An event of a kind with paired events (a fire panel, a camera): a late one is
        evaluated as if it had arrived in order (``backend.alerting.late``)."""
        place = place_of(rec.gateway_id, rec.boot_id, rec.seq, rec.rx)
        late = judge(EVENT_PAIRS[dev.kind], st, inp, place)
        if late is None:
            return self._run(dev, st, inp, now_ms)
        if self.on_late is not None:
            self.on_late()
        log.info(
            "%s: %s (seq %s) arrived after %s: %s",
            dev.id,
            inp.type,
            rec.seq,
            ", ".join(e.type for e in late.replay) or "a later one like it",
            "evaluated, then those again" if late.apply else "done already, skipped",
        )
        if not late.apply:
            self.dirty.add(dev.id)
            return []
        return self._late(dev, st, inp, late.replay, now_ms)

    def _late(
        self,
        dev: DeviceInfo,
        st: DeviceState,
        inp: DeviceEvent,
        replay: list[DeviceEvent],
        now_ms: int,
    ) -> list[Change]:
        """A late event, then the newer related events again, on the rule state (its timers,
        component lists and triggers end as in order); the alerts open at the end compared
        with those open now (``backend.alerting.late``): what ended in order is cleared; what
        the late event raised is raised, and resolved at once if a newer event ended it; what
        a newer event raised and is not open now was resolved by a person: left so."""
        open_now = set(st.open)
        raised: dict[str, Raise] = {}  # by the late event, on this device
        ended: dict[str, Clear] = {}
        updates: list[Update] = []
        for i, ev in enumerate((inp, *replay)):
            for rule in self.dispatch.get((dev.kind, DeviceEvent), ()):
                for d in rule(dev, st, ev) or ():
                    if d.device_id is not None and d.device_id != dev.id:
                        continue  # (another device's: its own events speak for it)
                    if isinstance(d, Raise):
                        if d.alert_type not in st.open and i == 0:
                            raised[d.alert_type] = d
                        st.open.add(d.alert_type)
                    elif isinstance(d, Clear):
                        if d.alert_type not in catalog.LATCHING:
                            st.open.discard(d.alert_type)
                            ended[d.alert_type] = d
                    elif i == 0:
                        updates.append(d)
        in_order, st.open = st.open, open_now
        changes: list[Change] = []
        for atype in sorted(open_now - in_order):
            changes += self._clear(dev, st, ended[atype], inp.ts, now_ms)
        for atype, d in raised.items():
            if atype in st.open or self.book.is_open(dev.id, atype):
                continue  # open already
            if atype in in_order:  # raised by the late event, and still so in order
                changes += self._raise(dev, st, d, now_ms)
                continue
            ch = self.book.raise_(dev, d, now_ms)
            if ch is not None:
                note = ended[atype].reason if atype in ended else "ended before it arrived"
                changes += [ch, self.book.resolve(ch.alert, now_ms, by="rules", note=note)]
        for u in updates:
            alert = self.book.open.get((dev.id, u.alert_type))
            ch = self.book.update(alert, dict(u.evidence), now_ms) if alert else None
            changes += [ch] if ch else []
        self.dirty.add(dev.id)
        self.urgent.add(dev.id)
        return changes

    def _rules_time(self, dev: DeviceInfo, st: DeviceState, rec: Record) -> int:
        """The time the rules see for a record (docs/alerts.md, "Time"): the device's own,
        unless it is more than ``clock_skew_s`` away from the gateway's receive time; then the
        receive time (or the last time seen, if later), and ``device.clock_skew`` sees the
        skew (``mem["skew_ms"]``). So one reading from a clock hours ahead never makes the next
        ones look old. A last time that far ahead of this receive time (a state saved before
        this rule) is forgotten."""
        bound = self._skew_bound.get(dev.id)
        if bound is None:
            bound = self._skew_bound[dev.id] = ms(dev, "clock_skew_s")
        rx, ts = rec.rx, rec.ts
        if st.last_ts - rx > bound:
            st.last_ts = 0
        if -bound <= rx - ts <= bound or rec.kind == "s":
            if st.mem and "skew_ms" in st.mem and rec.kind != "s":
                del st.mem["skew_ms"]
            return ts
        st.mem["skew_ms"] = rx - ts
        return max(rx, st.last_ts)  # (never older than what the rules have seen)

    def tick(self, now_ms: int, *, liveness_check: bool = True) -> list[Change]:
        """Timers due on device time, then (optionally) liveness and deadlines."""
        changes = self.tick_timers(now_ms, self.states)
        if liveness_check:
            changes += self.tick_gateways(now_ms)
            changes += self.tick_liveness(now_ms, self.states)
            changes += self.tick_escalations(now_ms)
        return changes

    def tick_timers(self, now_ms: int, device_ids: Iterable[str]) -> list[Change]:
        """Timers due on device time, of these devices (a caller may tick the city in
        slices)."""
        changes: list[Change] = []
        for device_id in device_ids:
            st = self.states.get(device_id)
            if st is None or not st.since:
                continue
            device_now = now_ms - st.offset_ms
            if device_now <= st.last_ts:
                continue
            dev = self.devices[device_id]
            changes.extend(self._run(dev, st, Tick(device_id, device_now), now_ms))
        return changes

    def tick_gateways(self, now_ms: int) -> list[Change]:
        """Gateways silent too long (before ``tick_liveness``: their devices' silence is
        theirs)."""
        return self._gateways_tick(now_ms)

    def tick_escalations(self, now_ms: int) -> list[Change]:
        """Acknowledgement deadlines passed."""
        return self.book.escalations(now_ms, self.shared.deadlines)

    def tick_liveness(self, now_ms: int, device_ids: Iterable[str]) -> list[Change]:
        """Offline and silent devices, of these devices."""
        changes: list[Change] = []
        for device_id in device_ids:
            st = self.states.get(device_id)
            if st is None or st.last_rx == 0:
                continue
            dev = self.devices[device_id]
            gw = self.gateways.get(dev.gateway_id)
            if gw is not None and not gw.online:
                continue  # suppressed: the gateway's own alert is the root cause
            decision = liveness(dev, st, now_ms)
            if decision is not None:
                changes += self._apply(dev, st, decision, now_ms - st.offset_ms, now_ms)
        return changes

    # ---- gateways ------------------------------------------------------------------------

    def gateway_state(self, gateway_id: str, online: bool, now_ms: int) -> list[Change]:
        """The gateway's retained state (heartbeat, or its Last Will)."""
        com_id = self.city.gateway_community.get(gateway_id)
        if com_id is None:
            return []
        gw = self.gateways.setdefault(gateway_id, GatewayWatch(online, now_ms))
        gw.last_seen = now_ms
        if online == gw.online and (online or self._gw_alert(gateway_id)):
            return []
        return self._gateway_changed(gateway_id, online, now_ms, "Last Will")

    def _gw_alert(self, gateway_id: str) -> bool:
        return self.book.is_open(gateway_id, GATEWAY_OFFLINE)

    def _gateways_tick(self, now_ms: int) -> list[Change]:
        out: list[Change] = []
        for gw_id, gw in self.gateways.items():
            if gw.online and now_ms - gw.last_seen >= self.shared.gateway_silent_ms:
                out += self._gateway_changed(gw_id, False, now_ms, "no heartbeat")
        return out

    def _gateway_changed(self, gw_id: str, online: bool, now_ms: int, why: str) -> list[Change]:
        gw = self.gateways[gw_id]
        gw.online = online
        dev = pseudo_device(self.city, "gateway", gw_id)
        if online:
            # Its devices' silence was the gateway's: watch them afresh from now.
            for d in self.city.gateway_devices(gw_id):
                st = self.states.get(d.id)
                if st is not None and st.last_rx:
                    st.last_rx = max(st.last_rx, now_ms)
            ch = self.book.clear(dev, Clear(GATEWAY_OFFLINE, "gateway back"), now_ms)
            return [ch] if ch else []
        ev = {"reason": why, "devices": len(self.city.gateway_devices(gw_id))}
        title = "网关离线 Gateway offline"
        ch = self.book.raise_(dev, Raise(GATEWAY_OFFLINE, catalog.MA, title, now_ms, ev), now_ms)
        return [ch] if ch else []

    # ---- decisions -----------------------------------------------------------------------

    def _run(self, dev: DeviceInfo, st: DeviceState, inp: Input, now_ms: int) -> list[Change]:
        changes: list[Change] = []
        since = st.since
        since_before = since.copy() if since else None
        for rule in self.dispatch.get((dev.kind, inp.__class__), ()):
            decisions = rule(dev, st, inp)
            if decisions:
                for decision in decisions:
                    changes += self._apply(dev, st, decision, inp.ts, now_ms)
        if since:
            for key in [k for k in since if k.startswith(_HELD)]:
                if inp.ts - since[key] >= self.shared.flap_window_ms:
                    changes += self._release(dev, st, key[len(_HELD) :], now_ms)
        self.dirty.add(dev.id)
        if changes or (since != since_before if since_before is not None else since):
            self.urgent.add(dev.id)
        return changes

    def _apply(
        self, dev: DeviceInfo, st: DeviceState, d: Decision, ts: int, now_ms: int
    ) -> list[Change]:
        target = dev
        if d.device_id is not None and d.device_id != dev.id:
            other = self.devices.get(d.device_id)
            if other is None:
                return []
            target, st = other, self.state(other.id)
        if isinstance(d, Raise):
            return self._raise(target, st, d, now_ms)
        if isinstance(d, Update):
            alert = self.book.open.get((target.id, d.alert_type))
            ch = self.book.update(alert, dict(d.evidence), now_ms) if alert else None
            return [ch] if ch else []
        return self._clear(target, st, d, ts, now_ms)

    def _raise(self, dev: DeviceInfo, st: DeviceState, d: Raise, now_ms: int) -> list[Change]:
        st.open.add(d.alert_type)
        if st.since.pop(_HELD + d.alert_type, None) is not None:
            alert = self.book.open.get((dev.id, d.alert_type))
            ch = self.book.update(alert, {"flapping": True}, now_ms) if alert else None
            return [ch] if ch else []
        if not self.book.is_open(dev.id, d.alert_type):
            folded = self.storms.fold(self.city, self.book, dev, d, now_ms)
            if folded is not None:
                return folded
        ch = self.book.raise_(dev, d, now_ms)
        return [ch] if ch else []

    def _clear(
        self, dev: DeviceInfo, st: DeviceState, d: Clear, ts: int, now_ms: int
    ) -> list[Change]:
        if d.alert_type in catalog.LATCHING:
            return []
        st.open.discard(d.alert_type)
        alert = self.book.open.get((dev.id, d.alert_type))
        if alert is None:
            return self.storms.member_cleared(self.book, dev, d.alert_type, now_ms)
        key = _FLAPS + d.alert_type
        window = [t for t in st.mem.get(key, []) if ts - t < self.shared.flap_window_ms]
        window.append(ts)
        st.mem[key] = window
        if len(window) > self.shared.flap_cycles:
            # Flapping: held open; resolved once it has stayed clear for the whole window.
            st.since[_HELD + d.alert_type] = ts
            ch = self.book.update(alert, {"flapping": True, "flap_cycles": len(window)}, now_ms)
            return [ch] if ch else []
        ch = self.book.clear(dev, d, now_ms)
        return [ch] if ch else []

    def _release(
        self, dev: DeviceInfo, st: DeviceState, alert_type: str, now_ms: int
    ) -> list[Change]:
        st.since.pop(_HELD + alert_type, None)
        st.mem.pop(_FLAPS + alert_type, None)
        alert = self.book.open.get((dev.id, alert_type))
        if alert is None:
            return []
        return [self.book.resolve(alert, now_ms, by="rules", note="clear since flapping stopped")]

    # ---- people --------------------------------------------------------------------------

    def note(self, change: Change) -> None:
        """After a person resolved an alert: the rules may raise it again."""
        if change.action != "resolved":
            return
        a = change.alert
        if a.device.kind == "community":
            for device_id in self.storms.forget(a):
                self.state(device_id).open.discard(a.type)
        elif a.device.id in self.states:
            st = self.states[a.device.id]
            st.open.discard(a.type)
            st.since.pop(_HELD + a.type, None)
            self.urgent.add(a.device.id)

    def open_alert(self, alert_id: str) -> Alert:
        return self.book.get(alert_id)


__all__ = ["OFFLINE", "TRANSMISSION", "Engine", "GatewayWatch", "Shared"]
