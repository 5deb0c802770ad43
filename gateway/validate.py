"""Decode and validate what devices publish on the community LAN (PROTOCOL.md section 1).

Pure functions of the topic, the payload and the set of known devices: no I/O, no clock (the
caller passes its receive time). Anything invalid becomes a ``Rejected`` with a reason that is
used as a metric label; valid items in the same payload are kept.

What is accepted is in the canonical form of ``anju.canonical`` (so that SQLite, the uplink and
PostgreSQL can store it): strings with NUL, lone surrogates and other C0 controls replaced by
U+FFFD, ``-0.0`` as ``0.0``, integers of at most 19 digits (metrics within 2**53), event data
nested at most ``MAX_DEPTH`` levels. The JSON parse is bounded (``anju.canonical.loads``): no
payload raises past ``decode_device_message``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Container
from dataclasses import dataclass
from typing import Any, Final

from anju import canonical
from anju.canonical import InputError
from anju.contract import (
    DEV_CHANNELS,
    DEVICE_ID_RE,
    EVENT_TYPE_RE,
    MAX_PAYLOAD_BYTES,
    MAX_STRING_LEN,
    METRIC_RE,
)
from anju.uplink import Kind

REASONS: Final = (
    "bad_topic",
    "too_large",
    "bad_json",
    "too_deep",
    "bad_number",
    "bad_shape",
    "bad_ts",
    "bad_metric",
    "bad_event",
    "unknown_device",
    "unstorable",  # the outbox refused it (a decoder bug; counted, acknowledged, kept in status)
    "internal_error",  # the decoder raised (a bug; counted, acknowledged, kept in status)
)

# Timestamps outside this window cannot be right: before 2020 or after 2100.
MIN_TS_MS: Final = 1_577_836_800_000
MAX_TS_MS: Final = 4_102_444_800_000


@dataclass(slots=True)  # (not frozen: one per reading, and a frozen __init__ costs 4x)
class Accepted:
    """A valid item, ready to be stored in the outbox."""

    device_id: str
    kind: Kind
    ts: int
    gateway_timed: bool
    payload: dict[str, Any]
    time_flag: str | None = None  # "device_clock": the device's ts was impossible, replaced


@dataclass(frozen=True, slots=True)
class Rejected:
    """An invalid item with the reason (a metric label) and a human detail."""

    device_id: str | None
    reason: str
    detail: str


Item = Accepted | Rejected


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


# One decoder, built once (``json.loads`` with options builds one per call). Numbers are not
# bounded by the parser on this fast path: the validators below bound every number they keep.
_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _parse_json(payload: bytes) -> Any:
    """The parsed payload; what cannot be parsed is explained by ``anju.canonical.loads``
    (the bounded parser), whose reason becomes the rejection's."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise _Invalid("too_large", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        return _DECODER.decode(payload.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        pass
    try:
        canonical.loads(payload, max_bytes=MAX_PAYLOAD_BYTES)
    except InputError as exc:
        raise _Invalid(exc.reason, exc.detail) from exc
    raise _Invalid("bad_json", "not parseable")  # (the two parsers agree: not reached)


def _what(v: Any) -> str:
    """A short, safe description of a value for a rejection's detail (never ``repr`` of a
    nested value, which could recurse past the interpreter's limit)."""
    return canonical.clean_str(v[:64]) if isinstance(v, str) else type(v).__name__


@dataclass(slots=True)  # (not frozen: one per reading)
class TimeFix:
    """A device timestamp as it will be stored: the time, and a flag when it was replaced."""

    ts: int
    gateway_timed: bool
    flag: str | None


def device_time(ts: int | None, rx_ms: int, *, clock_trusted: bool) -> TimeFix:
    """The timestamp to store for a device's ``ts``.

    Missing: the gateway's receive time. Impossible (before 2020, after 2100, or more than a day
    ahead of a trusted gateway clock): the gateway's receive time, flagged ``device_clock``,
    instead of storing 1970 or a future date.
    """
    if ts is None:
        return TimeFix(rx_ms, True, None)
    if not MIN_TS_MS <= ts <= MAX_TS_MS or (clock_trusted and ts > rx_ms + 86_400_000):
        return TimeFix(rx_ms, True, "device_clock")
    return TimeFix(ts, False, None)


def _ts(obj: dict[str, Any]) -> int | None:
    ts = obj.get("ts")
    if ts is None:
        return None
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise _Invalid("bad_ts", f"ts must be integer milliseconds, got {type(ts).__name__}")
    return ts


def _metric_value(name: str, v: Any) -> bool | int | float | str:
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        if abs(v) > 2**53:
            raise _Invalid("bad_number", f"{name}: integer out of range")
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise _Invalid("bad_number", f"{name}: not a finite number")
        return v + 0.0  # -0.0 becomes 0.0
    if isinstance(v, str):
        if len(v) > MAX_STRING_LEN:
            raise _Invalid("bad_metric", f"{name}: string longer than {MAX_STRING_LEN}")
        return canonical.clean_str(v)
    raise _Invalid("bad_metric", f"{name}: {type(v).__name__} is not a number, bool or string")


# Metric names already found valid (a gateway's devices use a few dozen): a set lookup instead
# of the pattern per metric. Bounded: past ``_NAMES_MAX`` names the pattern decides alone.
_GOOD_NAMES: set[str] = set()
_NAMES_MAX: Final = 4_096


def _telemetry(obj: Any) -> tuple[int | None, dict[str, Any]]:
    if not isinstance(obj, dict):
        raise _Invalid("bad_shape", "telemetry item is not an object")
    metrics = obj.get("metrics")
    if not isinstance(metrics, dict):
        raise _Invalid("bad_shape", "telemetry without a metrics object")
    clean: dict[str, Any] = {}
    good = _GOOD_NAMES
    for name, value in metrics.items():
        if name not in good:
            if not METRIC_RE.fullmatch(name):
                raise _Invalid("bad_metric", f"metric name {_what(name)!r} is not allowed")
            if len(good) < _NAMES_MAX:
                good.add(name)
        # The common values first, by exact type (bool is not int here): the checks of
        # ``_metric_value`` for each.
        t = type(value)
        if t is str and len(value) <= MAX_STRING_LEN and value.isprintable():
            clean[name] = value  # printable: nothing for ``clean_str`` to replace
        elif t is int and -(2**53) <= value <= 2**53:
            clean[name] = value
        else:
            clean[name] = _metric_value(name, value)
    return _ts(obj), {"m": clean}


def _event(obj: Any) -> tuple[int | None, dict[str, Any]]:
    if not isinstance(obj, dict):
        raise _Invalid("bad_shape", "event is not an object")
    et = obj.get("type")
    if not isinstance(et, str) or not EVENT_TYPE_RE.fullmatch(et):
        raise _Invalid("bad_event", f"event type {_what(et)!r} is not allowed")
    data = obj.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _Invalid("bad_event", "event data is not an object")
    if data:
        try:
            # The event's object is level 1, its data level 2.
            data = canonical.clean(data, max_depth=canonical.MAX_DEPTH - 1)
        except InputError as exc:
            raise _Invalid(exc.reason, f"event data: {exc.detail}") from exc
    return _ts(obj), {"e": et, "x": data}


def _status(obj: Any) -> tuple[int | None, dict[str, Any]]:
    if not isinstance(obj, dict) or not isinstance(obj.get("online"), bool):
        raise _Invalid("bad_shape", "status needs a boolean 'online'")
    status: dict[str, Any] = {"online": obj["online"]}
    fw = obj.get("fw")
    if isinstance(fw, str) and len(fw) <= MAX_STRING_LEN:
        status["fw"] = canonical.clean_str(fw)
    batt = obj.get("battery_pct")
    if isinstance(batt, int | float) and not isinstance(batt, bool) and 0 <= batt <= 100:
        status["battery_pct"] = batt if isinstance(batt, int) else batt + 0.0
    return None, {"s": status}


_DECODERS: Final = {
    "telemetry": ("t", _telemetry),
    "event": ("e", _event),
    "status": ("s", _status),
}


# Topics already parsed, to (device, channel): one dict lookup per message. Bounded: emptied
# when full (a device cannot make it grow past its own three topics: unknown ones are not kept).
_TOPICS: dict[str, tuple[str, str]] = {}
_TOPICS_MAX: Final = 8_192


def parse_topic(topic: str) -> tuple[str, str] | None:
    """(device_id, channel) of ``anju/dev/{device_id}/{channel}``, or None."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "anju" or parts[1] != "dev" or parts[3] not in DEV_CHANNELS:
        return None
    if not DEVICE_ID_RE.fullmatch(parts[2]):
        return None
    return parts[2], parts[3]


def decode_device_message(
    topic: str, payload: bytes, *, known: Container[str], rx_ms: int, clock_trusted: bool = True
) -> list[Item]:
    """Every item of one LAN message, each either Accepted or Rejected."""
    parsed = _TOPICS.get(topic)
    if parsed is None:
        parsed = parse_topic(topic)
        if parsed is not None and parsed[0] in known:
            if len(_TOPICS) >= _TOPICS_MAX:
                _TOPICS.clear()
            _TOPICS[topic] = parsed
    if parsed is None:
        return [
            Rejected(
                None,
                "bad_topic",
                f"topic {canonical.clean_str(topic[:128])!r} does not match the contract",
            )
        ]
    device_id, channel = parsed
    if device_id not in known:
        return [Rejected(device_id, "unknown_device", f"{device_id} is not in this gateway's list")]
    if len(payload) > MAX_PAYLOAD_BYTES:
        return [Rejected(device_id, "too_large", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")]
    if channel == "status" and payload == b"":
        return []  # a retained status being cleared
    try:
        doc = _parse_json(payload)
    except _Invalid as exc:
        return [Rejected(device_id, exc.reason, exc.detail)]
    kind, decoder = _DECODERS[channel]
    items = doc if channel == "telemetry" and isinstance(doc, list) else [doc]
    out: list[Item] = []
    for obj in items:
        try:
            ts, body = decoder(obj)
        except _Invalid as exc:
            out.append(Rejected(device_id, exc.reason, exc.detail))
            continue
        fix = device_time(ts, rx_ms, clock_trusted=clock_trusted)
        out.append(Accepted(device_id, kind, fix.ts, fix.gateway_timed, body, fix.flag))  # type: ignore[arg-type]
    return out
