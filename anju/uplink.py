"""The gateway -> backend uplink: topics and the record format (the project's own protocol).

Topics on the backend's broker (``{gw}`` is the gateway id):

- ``anju/gw/{gw}/up``     gateway -> backend, QoS 1: a batch of records (JSON, below).
- ``anju/gw/{gw}/ack``    backend -> gateway, QoS 1: ``{"seqs": [...]}`` done with: committed to
  the database, or rejected and kept in its dead-letter table (either way, not to be sent again).
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

Decoding (``decode_parts``) is record by record, into the canonical form of ``anju.canonical``:
a record without one is rejected with a reason (and its ``seq``/``b`` when they can be read),
the others are kept. At most ``MAX_BATCH_RECORDS`` records a batch.

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

from anju import canonical
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
    # Set by the backend, never sent: the record was committed before (a gateway's resend).
    repeat: bool = False


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
    return _RECORD_ENCODER.encode(body)


# One encoder for every record (``json.dumps`` with options builds one per call): the same text.
_RECORD_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False
)


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
    """The backend's confirmation that these records are done with: committed to the
    database, or kept in its dead-letter table (a record it rejected: sending it again would
    change nothing). The gateway deletes them from its outbox."""
    return json.dumps({"seqs": seqs}, separators=(",", ":")).encode()


def decode_ack(payload: bytes) -> list[int]:
    """Sequence numbers in a confirmation; ValueError when malformed."""
    try:
        doc = json.loads(payload)
        return [int(s) for s in doc["seqs"]]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed confirmation: {exc}") from exc


# ---- decoding: every input either a Record in canonical form or a reason ------------------

MAX_BATCH_RECORDS: Final = 10_000  # the gateway sends at most ``uplink.batch_max`` (<= 10,000)
MAX_SEQ: Final = 2**63 - 1  # int8
MAX_BOOT_CHARS: Final = 128
MAX_EVENT_TYPE_CHARS: Final = 64
# Where each record starts in what ``encode_batch`` writes (JSON strings escape '"', so this
# text cannot occur inside a string): used to save the good records of a batch that does not
# parse as a whole, and the sequence numbers of the bad ones.
_RECORD_START: Final = re.compile(r'\{"seq":(\d{1,19}),"b":"([^"\\]{1,128})",')


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record (or a whole batch) that has no canonical form. ``seq`` and ``boot_id`` are
    set when they could still be read: the backend then confirms the record (kept as a dead
    letter) so that the gateway stops sending it."""

    reason: str
    detail: str
    raw: str  # what was rejected, as text (for the dead-letter table; may be shortened)
    seq: int | None = None
    boot_id: str | None = None


@dataclass(frozen=True, slots=True)
class Decoded:
    gateway_id: str
    records: list[Record]
    rejected: list[Rejected]


_RAW_MAX: Final = 16 * 1024


def _raw(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text[: _RAW_MAX * 4].decode("utf-8", "replace")
    return canonical.clean_str(text[:_RAW_MAX])


def _int(v: Any, name: str, lo: int = -MAX_SEQ, hi: int = MAX_SEQ) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise UplinkDecodeError("bad_record", f"{name} is not an integer")
    if not lo <= v <= hi:
        raise UplinkDecodeError("bad_record", f"{name} out of range")
    return v


def _seq_of(r: Any) -> tuple[int | None, str | None]:
    """The (seq, boot) of a record that may be bad, when they can be trusted as such."""
    if not isinstance(r, dict):
        return None, None
    seq, boot = r.get("seq"), r.get("b")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < MAX_SEQ:
        return None, None
    if not isinstance(boot, str) or not 0 < len(boot) <= MAX_BOOT_CHARS:
        return None, None
    return (seq, boot) if canonical.is_clean_str(boot) else (None, None)


def decode_record(gw: str, r: Any) -> Record:
    """One record of a batch from ``gw``, in canonical form; UplinkDecodeError if none."""
    if not isinstance(r, dict):
        raise UplinkDecodeError("bad_record", "record is not an object")
    dev = r.get("d")
    kind = r.get("k")
    boot = r.get("b")
    if not isinstance(dev, str) or not DEVICE_ID_RE.match(dev):
        raise UplinkDecodeError("bad_record", f"bad device id {str(dev)[:80]!r}")
    if not isinstance(boot, str) or not boot:
        raise UplinkDecodeError("bad_record", "missing boot id")
    if len(boot) > MAX_BOOT_CHARS or not canonical.is_clean_str(boot):
        raise UplinkDecodeError("bad_record", "bad boot id")
    seq = _int(r.get("seq"), "seq", 0, MAX_SEQ - 1)
    ts = _int(r.get("ts"), "ts")
    rx = _int(r.get("rx"), "rx")
    try:
        if kind == "t":
            m = r.get("m")
            if not isinstance(m, dict):
                raise UplinkDecodeError("bad_record", "telemetry without metrics")
            extra: dict[str, Any] = {"metrics": canonical.clean(m)}
        elif kind == "e":
            et, data = r.get("e"), r.get("x", {})
            if not isinstance(et, str) or not isinstance(data, dict):
                raise UplinkDecodeError("bad_record", "event without type")
            if not et or len(et) > MAX_EVENT_TYPE_CHARS:
                raise UplinkDecodeError("bad_record", "bad event type")
            extra = {"event_type": canonical.clean_str(et), "data": canonical.clean(data)}
        elif kind == "s":
            s = r.get("s")
            if not isinstance(s, dict):
                raise UplinkDecodeError("bad_record", "status without body")
            extra = {"status": canonical.clean(s)}
        else:
            raise UplinkDecodeError("bad_record", f"unknown record kind {str(kind)[:20]!r}")
    except canonical.InputError as exc:
        raise UplinkDecodeError(exc.reason, exc.detail) from exc
    tq = r.get("tq")
    return Record(
        gateway_id=gw,
        boot_id=boot,
        seq=seq,
        device_id=dev,
        kind=kind,
        ts=ts,
        rx=rx,
        gateway_timed=r.get("gt") is True,
        time_flag=canonical.clean_str(tq[:32]) if isinstance(tq, str) else None,
        **extra,
    )


def _records_of(gw: str, recs: list[Any], out: Decoded) -> None:
    for i, r in enumerate(recs):
        if i >= MAX_BATCH_RECORDS:
            seq, boot = _seq_of(r)
            out.rejected.append(
                Rejected("too_many_records", f"more than {MAX_BATCH_RECORDS}", "", seq, boot)
            )
            continue
        try:
            out.records.append(decode_record(gw, r))
        except UplinkDecodeError as exc:
            seq, boot = _seq_of(r)
            raw = _raw(canonical.dumps(_shallow(r)))
            out.rejected.append(Rejected(exc.reason, exc.detail, raw, seq, boot))


def _shallow(r: Any) -> Any:
    """What can be shown of a bad record without re-encoding what made it bad."""
    try:
        return canonical.clean(r)
    except canonical.InputError:
        if isinstance(r, dict):
            return {str(k)[:64]: (v if isinstance(v, int | str) else "...") for k, v in r.items()}
        return "..."
    except (ValueError, OverflowError):
        return "..."


def _salvage(gw: str, text: str, why: canonical.InputError, out: Decoded) -> None:
    """A batch that does not parse as a whole (too deep, a huge integer, bad JSON in one
    record): each record in it, as ``encode_batch`` wrote it, decoded alone."""
    starts = list(_RECORD_START.finditer(text))
    if not starts:
        out.rejected.append(Rejected(why.reason, why.detail, _raw(text)))
        return
    for i, m in enumerate(starts):
        end = starts[i + 1].start() - 1 if i + 1 < len(starts) else text.rfind("]")
        piece = text[m.start() : max(end, m.start())]
        seq, boot = int(m.group(1)), m.group(2)
        seq_ok = seq < MAX_SEQ and canonical.is_clean_str(boot)
        try:
            r = canonical.loads(piece, max_bytes=MAX_BATCH_BYTES)
            out.records.append(decode_record(gw, r))
        except (canonical.InputError, UplinkDecodeError) as exc:
            reason = exc.reason
            out.rejected.append(
                Rejected(
                    reason,
                    exc.detail,
                    _raw(piece),
                    seq if seq_ok else None,
                    boot if seq_ok else None,
                )
            )


def _unparsed(gw: str, topic: str, payload: bytes, exc: canonical.InputError, out: Decoded) -> None:
    if exc.reason == "too_large":
        raise UplinkDecodeError(exc.reason, exc.detail)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise UplinkDecodeError("bad_json", "not UTF-8") from None
    head = re.match(r'\s*\{"v":1,"gw":"([^"\\]*)","recs":\[', text)
    if head is None:
        raise UplinkDecodeError(exc.reason, exc.detail)
    if head.group(1) != gw:
        raise UplinkDecodeError("gateway_mismatch", f"batch of another gateway on {topic}")
    _salvage(gw, text, exc, out)


def decode_parts(topic: str, payload: bytes) -> Decoded:
    """Decode an uplink batch record by record: the records in canonical form, and what was
    rejected, with a reason. Raises ``UplinkDecodeError`` only for a batch that cannot be
    attributed to a gateway at all (topic, or a ``gw`` that is not the topic's) or has no
    readable records (compression, envelope); never anything else."""
    gw = gateway_of_up_topic(topic)
    if gw is None:
        raise UplinkDecodeError("bad_topic", canonical.clean_str(topic[:200]))
    if payload[:1] == COMPRESSED:
        payload = _decompress(payload)
    out = Decoded(gw, [], [])
    try:
        doc = canonical.loads(payload, max_bytes=MAX_BATCH_BYTES)
    except canonical.InputError as exc:
        _unparsed(gw, topic, payload, exc, out)
        return out
    if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get("recs"), list):
        raise UplinkDecodeError("bad_batch", "expected {v: 1, gw, recs: [...]}")
    if doc.get("gw") != gw:
        said = doc.get("gw")
        raise UplinkDecodeError(
            "gateway_mismatch", f"batch says {str(said)[:80]!r} on {canonical.clean_str(topic)}"
        )
    _records_of(gw, doc["recs"], out)
    return out


def decode_batch(topic: str, payload: bytes) -> tuple[str, list[Record]]:
    """Decode an uplink batch whole; raise UplinkDecodeError for anything malformed (the first
    rejected record's reason). The backend uses ``decode_parts``, which keeps the good records
    of a batch with bad ones."""
    d = decode_parts(topic, payload)
    if d.rejected:
        first = d.rejected[0]
        raise UplinkDecodeError(first.reason, first.detail)
    return d.gateway_id, d.records
