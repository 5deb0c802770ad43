"""Fuzzing the GB/T 26875.3 codec.

- ``anju fuzz gbt26875 --minutes N``: hypothesis (``prepare``, the ``anju.fuzz`` target
  protocol): streams of frames of every data unit type with garbage between them, then
  mutated (bit flips, cuts, inserted ``@@``/``##``, changed lengths) or not; the whole decode
  path (``deframe``, ``decode_unit``, the mapping) must never raise, and without mutations
  every frame must come out, in order.
- ``anju bench fuzz-gbt26875``: a plain random mutator for ``ANJU_FUZZ_MINUTES`` (default 2;
  ``--quick``: 2 s), see ``benches.adapters.fuzz``.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from gateway.adapters.gbt26875 import (
    ComponentAnalog,
    ComponentConfig,
    ComponentStatus,
    DataUnit,
    Frame,
    InfoObject,
    Rejected,
    SystemConfig,
    SystemOperation,
    SystemStatus,
    SystemTime,
    SystemVersion,
    Time,
    UitdConfig,
    UitdOperation,
    UitdStatus,
    UitdTime,
    UitdVersion,
    decode_unit,
    deframe,
    encode_frame,
    encode_unit,
)
from gateway.adapters.gbt_map import Binding, Component, PanelState

SRC = bytes.fromhex("0102030405a6")

b8 = st.integers(0, 255)
times = st.builds(Time, b8, b8, b8, b8, b8, b8)
desc31 = st.binary(min_size=31, max_size=31)
var = st.binary(max_size=255)
addr = st.integers(0, 0xFFFFFFFF)
OBJECTS: dict[int, st.SearchStrategy[InfoObject]] = {
    1: st.builds(SystemStatus, b8, b8, st.integers(0, 0xFFFF), times),
    2: st.builds(ComponentStatus, b8, b8, b8, addr, st.integers(0, 0xFFFF), desc31, times),
    3: st.builds(ComponentAnalog, b8, b8, b8, addr, b8, st.integers(-32768, 32767), times),
    4: st.builds(SystemOperation, b8, b8, b8, b8, times),
    5: st.builds(SystemVersion, b8, b8, b8, b8),
    6: st.builds(SystemConfig, b8, b8, var),
    7: st.builds(ComponentConfig, b8, b8, b8, addr, desc31),
    8: st.builds(SystemTime, b8, b8, times),
    21: st.builds(UitdStatus, b8, times),
    24: st.builds(UitdOperation, b8, b8, times),
    25: st.builds(UitdVersion, b8, b8),
    26: st.builds(UitdConfig, var),
    28: st.builds(UitdTime, times),
}
UNITS: st.SearchStrategy[DataUnit] = st.sampled_from(sorted(OBJECTS)).flatmap(
    lambda t: st.lists(OBJECTS[t], min_size=1, max_size=4).map(lambda o: DataUnit(t, tuple(o)))
)
MUTATIONS = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 1 << 16), st.binary(max_size=30)), max_size=6
)
STREAMS = st.tuples(
    st.lists(st.tuples(st.binary(max_size=40), UNITS), min_size=1, max_size=6), MUTATIONS
)


def _mutate(b: bytearray, muts: list[tuple[int, int, bytes]]) -> bytearray:
    for op, at, blob in muts:
        if not b:
            break
        i = at % len(b)
        if op == 0:
            b[i] ^= 1 << (at % 8)
        elif op == 1:
            del b[i : i + 1 + at % 40]
        elif op == 2:
            b[i:i] = blob or b"@@"
        elif op == 3:
            b[i : i + 2] = (at & 0xFFFF).to_bytes(2, "little")
        else:
            b[i:i] = b"@@" + blob + b"##"
    return b


def check(example: tuple[list[tuple[bytes, DataUnit]], list[tuple[int, int, bytes]]]) -> None:
    parts, muts = example
    clean = all(b"@" not in junk for junk, _ in parts) and not muts
    stream = bytearray()
    serials = []
    for n, (junk, unit) in enumerate(parts):
        data = encode_unit(unit)
        if len(data) > 1024:
            continue
        stream += junk + encode_frame(Frame(n, 2, SRC, bytes(6), data, Time()))
        serials.append(n)
    raw = bytes(_mutate(stream, muts))
    state = PanelState(Binding("panel", components={(1, 1): Component("dev", "3", "x")}))
    items, used = deframe(raw)
    assert 0 <= used <= len(raw)
    got = []
    for item in items:
        if isinstance(item, Rejected):
            assert item.reason
            continue
        got.append(item.serial)
        decoded = decode_unit(item.data) if item.data else None
        if decoded is not None and not isinstance(decoded, Rejected):
            state.records(decoded, rx_ms=1_795_000_000_000, clock_trusted=True)
    if clean:
        assert got == serials, (got, serials)
        assert used == len(raw)


def prepare(_db_url: str | None) -> Any:
    from anju.fuzz import Fuzzing

    return Fuzzing(STREAMS, check)
