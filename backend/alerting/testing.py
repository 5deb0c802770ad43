"""A small city with one device of every kind, and a feeder with a fake clock: for the rule
scenario tests and the rule-throughput benchmark (no I/O)."""

from __future__ import annotations

from typing import Any

from anju.registry import CityIndex, parse_registry
from anju.uplink import Record
from backend.alerting.engine import Engine, Shared
from backend.alerting.lifecycle import Change

T0 = 1_764_122_400_000
KINDS = (
    "elevator",
    "smoke_detector",
    "heat_detector",
    "manual_call_point",
    "fire_panel",
    "water_pressure",
    "electrical_fire",
    "fire_door",
    "camera",
    "access_controller",
    "emergency_button",
    "perimeter",
)


def city_doc(communities: int = 1, per_kind: int = 2) -> dict[str, Any]:
    """Registry data: ``communities`` communities in Nanhu, ``per_kind`` devices of each kind,
    named ``c{n}-{kind}-{i}`` (camera i watches elevator i)."""
    coms = []
    for c in range(communities):
        cid = f"c{c}"
        devices: list[dict[str, Any]] = []
        for kind in KINDS:
            for i in range(per_kind):
                d: dict[str, Any] = {
                    "id": f"{cid}-{kind}-{i}",
                    "kind": kind,
                    "gateway": f"gw-{cid}",
                    "building": str(i + 1),
                }
                if kind == "elevator":
                    d["maintenance"] = "org-maint"
                    d["params"] = {"floors": 18, "lowest_floor": -1, "rated_speed_mps": 2.0}
                if kind == "camera":
                    d["params"] = {"elevator": f"{cid}-elevator-{i}"}
                devices.append(d)
        coms.append(
            {
                "id": cid,
                "name": f"小区 {c}",
                "district": "330402",
                "property": "org-prop",
                "gateways": [{"id": f"gw-{cid}"}],
                "devices": devices,
            }
        )
    return {
        "districts": [{"code": "330402", "name": "南湖区"}],
        "organisations": [
            {"id": "org-prop", "kind": "property", "name": "物业"},
            {"id": "org-maint", "kind": "maintenance", "name": "维保"},
        ],
        "communities": coms,
    }


def sample_city(communities: int = 1, per_kind: int = 2) -> CityIndex:
    return CityIndex(parse_registry(city_doc(communities, per_kind)))


class Feeder:
    """Feeds records to an engine as the ingest would; time in seconds after ``T0``; the
    backend clock is the device clock plus 5 ms unless ``skew_s`` says otherwise."""

    def __init__(self, city: CityIndex | None = None, **engine_kw: Any) -> None:
        self.city = city or sample_city()
        shared = engine_kw.pop("shared", None) or Shared()
        self.engine = Engine(self.city, shared=shared, **engine_kw)
        self.seq = 0
        self.changes: list[Change] = []

    def rec(self, dev: str, kind: Any, t_s: float, *, skew_s: float = 0, **kw: Any) -> Record:
        self.seq += 1
        ts = T0 + int(t_s * 1000)
        gw = self.city.devices[dev].gateway_id if dev in self.city.devices else "gw"
        rx = ts + int(skew_s * 1000)
        return Record(gw, "b", self.seq, dev, kind, ts, rx, **kw)

    def feed(self, rec: Record) -> list[Change]:
        out = self.engine.feed(rec, rec.rx + 5)
        self.changes += out
        return out

    def tel(self, dev: str, t_s: float, **metrics: Any) -> list[Change]:
        return self.feed(self.rec(dev, "t", t_s, metrics=metrics))

    def event(self, dev: str, t_s: float, etype: str, **data: Any) -> list[Change]:
        return self.feed(self.rec(dev, "e", t_s, event_type=etype, data=data))

    def status(self, dev: str, t_s: float, **status: Any) -> list[Change]:
        return self.feed(self.rec(dev, "s", t_s, status={"online": True, **status}))

    def tick(self, t_s: float, *, liveness: bool = False) -> list[Change]:
        out = self.engine.tick(T0 + int(t_s * 1000) + 5, liveness_check=liveness)
        self.changes += out
        return out

    def types(self, changes: list[Change], action: str | None = None) -> list[str]:
        return [c.alert.type for c in changes if action is None or c.action == action]

    def open_types(self, dev: str) -> set[str]:
        return {t for (d, t) in self.engine.book.open if d == dev}
