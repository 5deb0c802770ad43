"""Late events: an event evaluated after a later event it pairs with.

Events are evaluated in the order they arrive, and a resend can overtake what was queued (the
30-minute chaos run: a panel's ``fire`` whose commit failed when the leading worker left was
resent after the panel's ``reset`` had come through, and the alarm outlived its own reset).

Events that begin and end something are paired (``Pairs``): a fire panel's ``fire`` (per
component) and ``reset``; a component's ``fault`` / ``power_fault`` / ``supervisory`` and its
``normal`` (or the panel's ``reset``); ``disabled`` and ``enabled``; a linkage ``start`` and
its ``feedback``; a camera's ``fire_lane_blocked`` and ``fire_lane_clear``. The newest event
of each (type, component) is kept in the device's rule state with its place (gateway, boot,
sequence, receive time) and addresses. An event is late when a related event of its pair
evaluated before it comes after it: by sequence within one gateway boot, by the gateway's
receive time across boots. Then (``judge``):

- if, for each of its pairs, a newer related event of the same direction covers it (a later
  ``reset`` for a late ``reset``; a later ``normal`` of the same component, or of the whole
  panel, for a late ``normal``), it changes nothing: skipped;
- otherwise the engine evaluates it and the newer related events after it (closure over the
  pairs they share), in their order, on the rule state, and compares the alerts open at the
  end with those open now (``Engine._late``): what ended in order is cleared; an alert the late
  event raised and a newer event ended is raised and resolved at once (the departments learn of
  it); nothing is raised again (an alert open in order and not now was resolved by a person).
  The timers, component lists and triggers are those of the sequence in order.

Only the newest event of each (type, component) is kept (``MAX_COMPONENT_KEYS`` component
entries per device, the oldest forgotten first).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from backend.alerting.model import DeviceEvent, DeviceState

MEM_KEY: Final = "ev_last"  # st.mem: {type@component: [gw, boot, seq, rx, ts, type, data]}
TOP_KEY: Final = "ev_top"  # st.mem: the place of the newest paired event evaluated
MAX_COMPONENT_KEYS: Final = 256  # per device; the oldest component entries go first
_KEPT: Final = ("system_addr", "component_addr", "power")  # of an event's data, to replay it
_OPEN, _CLOSE = "open", "close"


@dataclass(frozen=True, slots=True)
class Pairs:
    """The paired events of one device kind: what each event type opens and closes, which
    pairs are per component, and which event types are about the whole device."""

    opens: Mapping[str, frozenset[str]]
    closes: Mapping[str, frozenset[str]]
    per_component: frozenset[str] = frozenset()
    device_wide: frozenset[str] = frozenset()

    def pairs(self, event_type: str) -> frozenset[str]:
        return self.opens.get(event_type, frozenset()) | self.closes.get(event_type, frozenset())

    def direction(self, event_type: str, pair: str) -> str:
        return _OPEN if pair in self.opens.get(event_type, ()) else _CLOSE


def component(data: Mapping[str, Any]) -> str:
    """A panel component's address (``system/component``); ``/`` for the whole panel."""
    return f"{data.get('system_addr', '')}/{data.get('component_addr', '')}"


@dataclass(frozen=True, slots=True)
class Late:
    """What to do with a late event: evaluate it (``apply``), then the newer related events
    (``replay``, oldest first)."""

    apply: bool
    replay: list[DeviceEvent]


def place_of(gateway_id: str, boot_id: str, seq: int, rx: int) -> list[Any]:
    return [gateway_id, boot_id, seq, rx]


def newer(a: list[Any], b: list[Any]) -> bool:
    """Whether place ``a`` comes after place ``b``: by the gateway's sequence within one boot,
    by the gateway's receive time across boots."""
    if a[0] == b[0] and a[1] == b[1]:
        return bool(a[2] > b[2])
    return bool(a[3] > b[3])


def judge(pairs: Pairs, st: DeviceState, inp: DeviceEvent, place: list[Any]) -> Late | None:
    """Note ``inp`` as the newest of its (type, component) if it is, and say how to evaluate
    it: None when it is not late (evaluate it as it comes)."""
    if not pairs.pairs(inp.type):
        return None
    last: dict[str, list[Any]] = st.mem.setdefault(MEM_KEY, {})
    top = st.mem.get(TOP_KEY)
    if top is None or newer(place, top):
        # After everything kept (the common case): not late, nothing to look through.
        st.mem[TOP_KEY] = place
        _remember(pairs, last, inp, place)
        return None
    after = [e for e in last.values() if newer(e, place)]
    _remember(pairs, last, inp, place)
    mine = _shared(pairs, inp.type, inp.data, after)
    if not mine:
        return None
    covered = {
        p
        for e, ps in mine
        for p in ps
        if _same(pairs, str(e[5]), inp.type, p) and _covers(pairs, e, inp, p)
    }
    if covered >= pairs.pairs(inp.type):
        return Late(False, [])  # done again by a newer event of each of its pairs
    # The newer events of its pairs, and of theirs (a replayed reset also ends a newer
    # fault's pair, whose newer events must follow it again), in their order.
    chosen = {id(e): e for e, _ in mine}
    todo = list(chosen.values())
    while todo:
        x = todo.pop()
        for e, _ in _shared(pairs, str(x[5]), x[6], after):
            if id(e) not in chosen:
                chosen[id(e)] = e
                todo.append(e)
    ordered = sorted(chosen.values(), key=_order_key)
    replay = [DeviceEvent(inp.device_id, int(e[4]), str(e[5]), dict(e[6])) for e in ordered]
    return Late(True, replay)


def _same(pairs: Pairs, a: str, b: str, pair: str) -> bool:
    return pairs.direction(a, pair) == pairs.direction(b, pair)


def _whole(pairs: Pairs, event_type: str, data: Mapping[str, Any]) -> bool:
    """About the whole device: a device-wide type, or no component address."""
    return event_type in pairs.device_wide or component(data) == "/"


def _covers(pairs: Pairs, e: list[Any], inp: DeviceEvent, pair: str) -> bool:
    """Whether entry ``e`` (same direction) does for ``pair`` all that ``inp`` would: the
    same component, or the whole device (a component's event does not cover the whole)."""
    if pair not in pairs.per_component or _whole(pairs, str(e[5]), e[6]):
        return True
    return not _whole(pairs, inp.type, inp.data) and component(e[6]) == component(inp.data)


def _shared(
    pairs: Pairs, event_type: str, data: Mapping[str, Any], entries: list[list[Any]]
) -> list[tuple[list[Any], frozenset[str]]]:
    """The entries about the same thing as an event of ``event_type`` with ``data``, each with
    the pairs they share (per component where the pair is, the device-wide events matching
    every component)."""
    mine = pairs.pairs(event_type)
    comp = component(data)
    whole = event_type in pairs.device_wide or comp == "/"
    out = []
    for e in entries:
        shared = mine & pairs.pairs(str(e[5]))
        if not whole and str(e[5]) not in pairs.device_wide:
            ecomp = component(e[6])
            if ecomp != "/" and ecomp != comp:
                shared = shared - pairs.per_component
        if shared:
            out.append((e, frozenset(shared)))
    return out


def _order_key(e: list[Any]) -> tuple[int, int]:
    # Entries newer than one late event: one boot's by sequence, across boots by receive time.
    return (int(e[3]), int(e[2]))


def _remember(pairs: Pairs, last: dict[str, list[Any]], inp: DeviceEvent, place: list[Any]) -> None:
    per_comp = any(p in pairs.per_component for p in pairs.pairs(inp.type))
    if per_comp and inp.type not in pairs.device_wide:
        key = f"{inp.type}@{component(inp.data)}"
    else:
        key = inp.type
    old = last.get(key)
    if old is not None and not newer(place, old):
        return
    last[key] = [*place, inp.ts, inp.type, {k: inp.data[k] for k in _KEPT if k in inp.data}]
    comp_keys = [k for k in last if "@" in k]
    if len(comp_keys) > MAX_COMPONENT_KEYS:
        comp_keys.sort(key=lambda k: last[k][3])
        for k in comp_keys[: len(comp_keys) - MAX_COMPONENT_KEYS]:
            del last[k]
