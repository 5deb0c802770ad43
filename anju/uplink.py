"""The gateway -> backend uplink: topics and the record format (the project's own protocol).

Topics on the backend's broker (``{gw}`` is the gateway id):

- ``anju/gw/{gw}/up``     gateway -> backend, QoS 1: a batch of records (JSON, below).
- ``anju/gw/{gw}/ack``    backend -> gateway, QoS 1: ``{"seqs": [...]}`` committed to the database.
- ``anju/gw/{gw}/state``  gateway, retained, QoS 1: ``{"online": true, "boot": ..., "ts": ...}``;
  the gateway's Last Will sets ``{"online": false}``.

A batch is ``{"v": 1, "gw": "<gateway id>", "recs": [record, ...]}`` and a record is

``{"seq": 17, "b": "<boot id>", "d": "<device id>", "k": "t"|"e"|"s", "ts": <device ms>,
"rx": <gateway ms>, "gt": true?, "m": {...}}`` with ``m`` (metrics) for telemetry, ``e``
(event type) and ``x`` (event data) for events, ``s`` (status) for statuses.

``seq`` is per gateway, strictly increasing and never reused (it survives restarts in the
outbox); (gateway, boot, seq) identifies a record, so the backend drops redelivered duplicates.
A record may carry ``"tq"``, a time-quality flag: ``"device_clock"`` (the device's ``ts`` was
impossible and was replaced by the gateway's receive time, ``gt`` is then true) or
``"gateway_clock"`` (the gateway's own clock was never confirmed while the record waited; its
times may be wrong).

Compression: a batch whose first byte is ``0x01`` is the same JSON compressed with zlib
(``COMPRESSED`` + ``zlib.compress(json)``). JSON never starts with that byte, so both forms
travel on the same topic and ``decode_batch`` accepts either. Decompressed size is capped at
``MAX_BATCH_BYTES``.

Remote configuration (backend -> gateway, on the backend's broker):

- ``anju/gw/{gw}/config``         retained, QoS 1: ``{"version": N, "config": {...}}``, keys of
  the gateway's configuration file to change (merged over the current file).
- ``anju/gw/{gw}/config/result``  gateway, retained, QoS 1:
  ``{"version": N, "ok": bool, "error": str | null, "ts": ms}``.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from typing import Any, Final, Literal

from anju.contract import DEVICE_ID_RE

UPLINK_PREFIX: Final = "anju/gw"
UP_SUBSCRIPTION: Final = f"{UPLINK_PREFIX}/+/up"
# Batches of events (alarms) only: their own topic, so that the backend can read them on a
# connection of their own instead of behind a telemetry backlog on the same socket.
UP_EVENTS_SUBSCRIPTION: Final = f"{UPLINK_PREFIX}/+/up/e"
STATE_SUBSCRIPTION: Final = f"{UPLINK_PREFIX}/+/state"
_UP_TOPIC_RE: Final = re.compile(r"^anju/gw/([A-Za-z0-9][A-Za-z0-9_.-]{0,63})/up(?:/e)?$")

COMPRESSED: Final = b"\x01"
MAX_BATCH_BYTES: Final = 32 * 1024 * 1024
COMPRESS_ABOVE: Final = 1024

Kind = Literal["t", "e", "s"]


def up_topic(gateway_id: str, *, events: bool = False) -> str:
    """Where a gateway publishes its batches; ``events=True`` for batches of events only."""
    return f"{UPLINK_PREFIX}/{gateway_id}/up{'/e' if events else ''}"


def ack_topic(gateway_id: str) -> str:
    return f"{UPLINK_PREFIX}/{gateway_id}/ack"


def state_topic(gateway_id: str) -> str:
    return f"{UPLINK_PREFIX}/{gateway_id}/state"


def config_topic(gateway_id: str) -> str:
    return f"{UPLINK_PREFIX}/{gateway_id}/config"


def config_result_topic(gateway_id: str) -> str:
    return f"{UPLINK_PREFIX}/{gateway_id}/config/result"


def gateway_of_up_topic(topic: str) -> str | None:
    m = _UP_TOPIC_RE.match(topic)
    return m.group(1) if m else None


@dataclass(frozen=True, slots=True)
class Record:
    """One normalised reading, event or status as it travels from gateway to backend."""

    gateway_id: str
    boot_id: str
    seq: int
    device_id: str
    kind: Kind
    ts: int
    rx: int
    gateway_timed: bool = False
    metrics: dict[str, Any] | None = None
    event_type: str | None = None
    data: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    time_flag: str | None = None


class UplinkDecodeError(ValueError):
    """A batch from a gateway could not be decoded; ``reason`` is the metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def record_body(
    *,
    device_id: str,
    kind: Kind,
    ts: int,
    rx: int,
    gateway_timed: bool,
    payload: dict[str, Any],
    time_flag: str | None = None,
) -> str:
    """The JSON of a record without its sequence and boot (they are added when sent)."""
    body: dict[str, Any] = {"d": device_id, "k": kind, "ts": ts, "rx": rx}
    if gateway_timed:
        body["gt"] = True
    if time_flag is not None:
        body["tq"] = time_flag
    body.update(payload)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_batch(gateway_id: str, rows: list[tuple[int, str, str]]) -> bytes:
    """Batch of (seq, boot, body) rows, splicing the stored bodies without re-encoding them."""
    parts = [f'{{"seq":{seq},"b":"{boot}",{body[1:]}' for seq, boot, body in rows]
    return f'{{"v":1,"gw":"{gateway_id}","recs":[{",".join(parts)}]}}'.encode()


def compress_batch(payload: bytes, *, above: int = COMPRESS_ABOVE) -> bytes:
    """The compressed form of an encoded batch, when it is larger than ``above`` bytes."""
    if len(payload) <= above:
        return payload
    return COMPRESSED + zlib.compress(payload, 1)


def _decompress(payload: bytes) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(payload[1:], MAX_BATCH_BYTES)
    except zlib.error as exc:
        raise UplinkDecodeError("bad_compression", str(exc)) from exc
    if d.unconsumed_tail or not d.eof:
        raise UplinkDecodeError(
            "bad_compression", f"truncated, or more than {MAX_BATCH_BYTES} bytes decompressed"
        )
    return out


def encode_ack(seqs: list[int]) -> bytes:
    """The backend's confirmation that these records are committed."""
    return json.dumps({"seqs": seqs}, separators=(",", ":")).encode()


def decode_ack(payload: bytes) -> list[int]:
    """Sequence numbers in a confirmation; ValueError when malformed."""
    try:
        doc = json.loads(payload)
        return [int(s) for s in doc["seqs"]]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed confirmation: {exc}") from exc


def _int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise UplinkDecodeError("bad_record", f"{name} is not an integer")
    return v


def decode_batch(topic: str, payload: bytes) -> tuple[str, list[Record]]:
    """Decode an uplink batch; raise UplinkDecodeError for anything malformed."""
    gw = gateway_of_up_topic(topic)
    if gw is None:
        raise UplinkDecodeError("bad_topic", topic)
    if payload[:1] == COMPRESSED:
        payload = _decompress(payload)
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UplinkDecodeError("bad_json", str(exc)) from exc
    if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get("recs"), list):
        raise UplinkDecodeError("bad_batch", "expected {v: 1, gw, recs: [...]}")
    if doc.get("gw") != gw:
        raise UplinkDecodeError("gateway_mismatch", f"batch says {doc.get('gw')!r} on {topic}")
    out: list[Record] = []
    for r in doc["recs"]:
        if not isinstance(r, dict):
            raise UplinkDecodeError("bad_record", "record is not an object")
        dev = r.get("d")
        kind = r.get("k")
        boot = r.get("b")
        if not isinstance(dev, str) or not DEVICE_ID_RE.match(dev):
            raise UplinkDecodeError("bad_record", f"bad device id {dev!r}")
        if not isinstance(boot, str) or not boot:
            raise UplinkDecodeError("bad_record", "missing boot id")
        if kind == "t":
            m = r.get("m")
            if not isinstance(m, dict):
                raise UplinkDecodeError("bad_record", "telemetry without metrics")
            extra: dict[str, Any] = {"metrics": m}
        elif kind == "e":
            et, data = r.get("e"), r.get("x", {})
            if not isinstance(et, str) or not isinstance(data, dict):
                raise UplinkDecodeError("bad_record", "event without type")
            extra = {"event_type": et, "data": data}
        elif kind == "s":
            s = r.get("s")
            if not isinstance(s, dict):
                raise UplinkDecodeError("bad_record", "status without body")
            extra = {"status": s}
        else:
            raise UplinkDecodeError("bad_record", f"unknown record kind {kind!r}")
        out.append(
            Record(
                gateway_id=gw,
                boot_id=boot,
                seq=_int(r.get("seq"), "seq"),
                device_id=dev,
                kind=kind,
                ts=_int(r.get("ts"), "ts"),
                rx=_int(r.get("rx"), "rx"),
                gateway_timed=bool(r.get("gt", False)),
                time_flag=r["tq"] if isinstance(r.get("tq"), str) else None,
                **extra,
            )
        )
    return gw, out
