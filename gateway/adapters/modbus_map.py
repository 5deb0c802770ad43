"""Modbus register maps for elevator controllers (YAML, no code), and their decoding. Pure: the
poller reads the registers the plan names and passes them in.

A map is a list of points; each point reads one place (a holding or input register, a coil
or a discrete input) and produces one of:

- ``metric``: a canonical elevator metric of ALERTS.md (or ``x_<anything>`` for a custom
  one), from a number (``type``, ``scale``, ``offset``), a bit (``bit``) or an enumeration
  (``enum``: raw value -> metric value);
- ``event: alarm_button``: sent on the rising edge of a bit or a bool;
- ``fault: code``: a register holding a fault number, ``codes`` maps numbers to GB/T 24476
  codes ("01".."11"); ``fault: bits``: a register whose bits are faults (``bits``: bit -> code).
  A fault event is sent when a code appears.

``word_order`` says where the high word of a 32-bit value is (``big``: first register).
``encode`` is the inverse of ``decode`` (the simulator serves a map with it).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from anju.errors import ConfigError
from anju.yamlfile import load_model

MAPS_DIR: Final = Path(__file__).parent / "maps"
Table = Literal["holding", "input", "coil", "discrete"]
FaultCode = Annotated[str, StringConstraints(pattern=r"^(0[1-9]|1[01])$")]
BIT_TABLES: Final = frozenset({"coil", "discrete"})

# Canonical elevator metrics (ALERTS.md) and the values the enumerated ones may take.
ELEVATOR_METRICS: Final[dict[str, frozenset[Any] | type]] = {
    "moving": bool,
    "direction": frozenset({"up", "down", "none"}),
    "floor": int,
    "in_door_zone": bool,
    "door": frozenset({"open", "closed"}),
    "passenger": bool,
    "service_mode": frozenset(
        {
            "normal",
            "inspection",
            "fire_return",
            "firefighter",
            "emergency_power",
            "earthquake",
            "out_of_service",
            "unknown",
        }
    ),
    "speed_mps": float,
    "up_limit": bool,
    "down_limit": bool,
    "power": frozenset({"normal", "outage"}),
    "run_count": int,
    "run_hours": float,
}
_MAX_READ: Final = {"holding": 120, "input": 120, "coil": 1968, "discrete": 1968}
_GAP: Final = 8


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Point(_Strict):
    metric: str | None = None
    event: Literal["alarm_button"] | None = None
    fault: Literal["code", "bits"] | None = None
    table: Table
    address: int = Field(ge=0, le=65535)
    type: Literal["uint16", "int16", "uint32", "int32", "float32", "bool"] = "uint16"
    bit: int | None = Field(None, ge=0, le=15)
    scale: float = 1.0
    offset: float = 0.0
    enum: dict[int, str | bool] | None = None
    codes: dict[int, FaultCode] | None = None
    bits: dict[int, FaultCode] | None = None

    @model_validator(mode="after")
    def _check(self) -> Point:
        produced = [x for x in (self.metric, self.event, self.fault) if x is not None]
        if len(produced) != 1:
            raise ValueError("a point produces exactly one of metric, event or fault")
        numeric = self.type not in ("bool", "uint16")
        if self.table in BIT_TABLES and (self.bit is not None or numeric):
            raise ValueError(f"a {self.table} is one bit: no 'bit', no numeric 'type'")
        if self.type in ("uint32", "int32", "float32") and (self.bit is not None or self.enum):
            raise ValueError(f"{self.type} cannot have 'bit' or 'enum'")
        if self.fault == "code" and not self.codes:
            raise ValueError("fault: code needs 'codes' (register value -> GB/T 24476 code)")
        if self.fault == "bits" and not self.bits:
            raise ValueError("fault: bits needs 'bits' (bit -> GB/T 24476 code)")
        if self.fault is not None and self.table in BIT_TABLES:
            raise ValueError("a fault point reads a register")
        if self.bits and any(not 0 <= b <= 15 for b in self.bits):
            raise ValueError("fault bits are 0 to 15")
        if self.metric is not None:
            self._check_metric(self.metric)
        return self

    def _check_metric(self, m: str) -> None:
        if m.startswith("x_"):
            return
        kind = ELEVATOR_METRICS.get(m)
        if kind is None:
            raise ValueError(
                f"unknown elevator metric {m!r}; expected one of {sorted(ELEVATOR_METRICS)} "
                "or x_<name> for a custom one"
            )
        one_bit = self.bit is not None or self.type == "bool" or self.table in BIT_TABLES
        if isinstance(kind, frozenset):
            if not self.enum:
                raise ValueError(f"{m} needs an 'enum' (raw value -> one of {sorted(kind)})")
            bad = [v for v in self.enum.values() if v not in kind]
            if bad:
                raise ValueError(f"{m}: {bad} not among {sorted(kind)}")
        elif kind is bool:
            if not one_bit and not self.enum:
                raise ValueError(f"{m} is a bool: give 'bit', type bool, or an 'enum'")
        elif self.enum or one_bit:
            raise ValueError(f"{m} is a number: no 'bit' or 'enum'")

    def registers(self) -> int:
        return 2 if self.type in ("uint32", "int32", "float32") else 1


class RegisterMap(_Strict):
    name: str
    description: str = ""
    word_order: Literal["big", "little"] = "big"
    points: list[Point] = Field(min_length=1)


def load_map(spec: str, *, base: Path | None = None) -> RegisterMap:
    """A map from ``builtin:NAME`` (shipped in gateway/adapters/maps) or a YAML path; a map
    with an error raises ConfigError naming the file and the line."""
    if spec.startswith("builtin:"):
        path = MAPS_DIR / f"{spec[len('builtin:') :]}.yaml"
        if not path.exists():
            have = sorted(p.stem for p in MAPS_DIR.glob("*.yaml"))
            raise ConfigError(f"no built-in register map {spec!r}; built-in: {have}")
    else:
        path = Path(spec) if base is None or Path(spec).is_absolute() else base / spec
    return load_model(path, RegisterMap)


Read = tuple[str, int, int]  # (table, first address, count)
Image = dict[tuple[str, int], int]  # (table, address) -> register value or bit


def plan(m: RegisterMap) -> list[Read]:
    """The reads that cover every point: neighbouring addresses merged (gaps up to 8)."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for p in m.points:
        spans.setdefault(p.table, []).append((p.address, p.address + p.registers()))
    out: list[Read] = []
    for table, ranges in sorted(spans.items()):
        ranges.sort()
        start, end = ranges[0]
        for a, b in ranges[1:]:
            if a - end <= _GAP and b - start <= _MAX_READ[table]:
                end = max(end, b)
            else:
                out.append((table, start, end - start))
                start, end = a, b
        out.append((table, start, end - start))
    return out


def _raw(m: RegisterMap, p: Point, img: Image) -> int | float:
    v = img[(p.table, p.address)]
    if p.registers() == 1:
        return v - 0x10000 if p.type == "int16" and v >= 0x8000 else v
    w2 = img[(p.table, p.address + 1)]
    hi, lo = (v, w2) if m.word_order == "big" else (w2, v)
    packed = struct.pack(">HH", hi, lo)
    fmt = {"uint32": ">I", "int32": ">i", "float32": ">f"}[p.type]
    out: int | float = struct.unpack(fmt, packed)[0]
    return out


class Reading:
    """What one poll says: metrics, whether the alarm button is pressed, active fault codes."""

    __slots__ = ("alarm", "faults", "metrics")

    def __init__(self) -> None:
        self.metrics: dict[str, bool | int | float | str] = {}
        self.alarm = False
        self.faults: set[str] = set()


def decode(m: RegisterMap, img: Image) -> Reading:
    """Decode a poll (``img`` holds every place the plan read). Raw values an enum does not
    know are left out (not guessed); a NaN float is left out."""
    r = Reading()
    for p in m.points:
        raw = _raw(m, p, img)
        if p.bit is not None:
            raw = int(raw) >> p.bit & 1
        if p.fault == "code":
            assert p.codes is not None
            code = p.codes.get(int(raw))
            if code is not None:
                r.faults.add(code)
            continue
        if p.fault == "bits":
            assert p.bits is not None
            r.faults.update(c for b, c in p.bits.items() if int(raw) >> b & 1)
            continue
        if p.event is not None:
            r.alarm = r.alarm or bool(raw)
            continue
        assert p.metric is not None
        if p.enum is not None:
            val = p.enum.get(int(raw))
            if val is None:
                continue
            r.metrics[p.metric] = val
        elif p.bit is not None or p.type == "bool" or p.table in BIT_TABLES:
            r.metrics[p.metric] = bool(raw)
        else:
            x = raw * p.scale + p.offset
            if x != x or x in (float("inf"), float("-inf")):
                continue
            kind = ELEVATOR_METRICS.get(p.metric)
            r.metrics[p.metric] = round(x) if kind is int else round(float(x), 6)
    return r


def encode(m: RegisterMap, metrics: dict[str, Any], *, alarm: bool, faults: set[str]) -> Image:
    """The register image that ``decode`` reads back as these values (for the simulator)."""
    img: Image = {}
    for p in m.points:
        key = (p.table, p.address)
        if p.fault == "code":
            assert p.codes is not None
            nums = [n for n, c in sorted(p.codes.items()) if c in faults]
            _put(m, p, img, nums[0] if nums else 0)
            continue
        if p.fault == "bits":
            assert p.bits is not None
            _put(m, p, img, sum(1 << b for b, c in p.bits.items() if c in faults))
            continue
        if p.event is not None:
            val: Any = int(alarm)
        else:
            assert p.metric is not None
            if p.metric not in metrics:
                continue
            v = metrics[p.metric]
            if p.enum is not None:
                val = next((k for k, e in p.enum.items() if e == v), 0)
            elif p.bit is not None or p.type == "bool" or p.table in BIT_TABLES:
                val = int(bool(v))
            else:
                val = (float(v) - p.offset) / p.scale
        if p.bit is not None:
            cur = img.get(key, 0)
            img[key] = cur | (1 << p.bit) if val else cur & ~(1 << p.bit)
        else:
            _put(m, p, img, val)
    return img


def _put(m: RegisterMap, p: Point, img: Image, val: Any) -> None:
    key = (p.table, p.address)
    if p.registers() == 1:
        img[key] = round(val) & 0xFFFF
        return
    fmt = {"uint32": ">I", "int32": ">i", "float32": ">f"}[p.type]
    v = float(val) if p.type == "float32" else round(val)
    hi, lo = struct.unpack(">HH", struct.pack(fmt, v))
    first, second = (hi, lo) if m.word_order == "big" else (lo, hi)
    img[key] = first
    img[(p.table, p.address + 1)] = second
