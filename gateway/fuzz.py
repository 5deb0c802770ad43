"""``anju fuzz lan``: the gateway's LAN decoder (``decode_device_message``) into a real outbox.

Properties, for any topic channel and payload a device may publish: the decoder never raises;
every accepted item is in canonical form (``anju.canonical``); its record body is stored in a
real SQLite outbox and read back unchanged. CI runs it bounded (``tests/test_fuzz_lan.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from anju import canonical
from anju.fuzz import RAW_POISON, Fuzzing, assert_canonical, texts, values
from anju.uplink import record_body
from gateway.outbox import EVENTS, TELEMETRY, Outbox
from gateway.validate import Accepted, Rejected, decode_device_message

NEEDS_DB = False
DEVICE = "fz-dev-1"
KNOWN = frozenset({DEVICE})
RX = 1_764_122_400_500
CHANNELS = ("telemetry", "event", "status")


def _doc(draw: st.DrawFn, channel: str) -> Any:
    """A message close to the contract, with poison where a value goes."""
    ts = draw(st.one_of(st.none(), st.integers(-(2**70), 2**70), values))
    if channel == "telemetry":
        metrics = draw(
            st.dictionaries(
                st.one_of(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), texts),
                values,
                max_size=4,
            )
        )
        item = {"ts": ts, "metrics": metrics}
        return draw(st.one_of(st.just(item), st.lists(st.just(item), max_size=3)))
    if channel == "event":
        return {
            "ts": ts,
            "type": draw(st.one_of(st.sampled_from(["alarm", "fault"]), texts)),
            "data": draw(values),
        }
    return {
        "online": draw(st.one_of(st.booleans(), values)),
        "fw": draw(values),
        "battery_pct": draw(values),
    }


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, bytes]:
    channel = draw(st.sampled_from(CHANNELS))
    how = draw(st.integers(0, 3))
    if how == 0:
        text = json.dumps(_doc(draw, channel), ensure_ascii=draw(st.booleans()))
        payload = text.encode("utf-8", "surrogatepass")
    elif how == 1:
        payload = draw(st.sampled_from(RAW_POISON)).encode()
    elif how == 2:
        payload = draw(st.binary(max_size=200))
    else:  # a valid message with a poisoned fragment spliced in
        text = json.dumps(_doc(draw, channel))
        at = draw(st.integers(0, len(text)))
        payload = (text[:at] + draw(st.sampled_from(RAW_POISON)) + text[at:]).encode()
    return channel, payload


class _Check:
    def __init__(self) -> None:
        # In memory where there is a tmpfs: what is checked is that the outbox can store it,
        # not the disk's fsync, which would make each example cost milliseconds.
        shm = Path("/dev/shm")
        where = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
        self.dir = Path(tempfile.mkdtemp(prefix="anju-fuzz-lan-", dir=where))
        self.outbox = Outbox(self.dir / "outbox.sqlite3", max_bytes=64 * 1024 * 1024)
        self.stored = 0

    def __call__(self, example: tuple[str, bytes]) -> None:
        channel, payload = example
        items = decode_device_message(
            f"anju/dev/{DEVICE}/{channel}", payload, known=KNOWN, rx_ms=RX
        )
        bodies: list[tuple[int, str]] = []
        for item in items:
            if isinstance(item, Rejected):
                assert item.reason and canonical.is_clean_str(item.detail), item
                continue
            assert isinstance(item, Accepted)
            assert_canonical(item.payload)
            body = record_body(
                device_id=item.device_id,
                kind=item.kind,
                ts=item.ts,
                rx=RX,
                gateway_timed=item.gateway_timed,
                payload=item.payload,
                time_flag=item.time_flag,
            )
            bodies.append((TELEMETRY if item.kind == "t" else EVENTS, body))
        if not bodies:
            return
        seqs = self.outbox.append("fuzz", bodies, RX).seqs
        back = {seq: body for seq, _boot, body in self.outbox.read_seqs(seqs)}
        assert [back[s] for s in seqs] == [b for _lane, b in bodies]
        for body in back.values():
            assert_canonical(json.loads(body))
        self.outbox.confirm(seqs)
        self.stored += len(seqs)

    def close(self) -> None:
        self.outbox.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def prepare(_db_url: str | None) -> Fuzzing:
    check = _Check()
    return Fuzzing(messages(), check, check.close)
