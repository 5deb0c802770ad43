"""The GB/T 26875.3 codec (gateway/adapters/gbt26875.py) and its mapping to records: vectors
written out by hand from the standard's layout, property tests, and the mapping's events."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.adapters import gbt_tables as T
from gateway.adapters.fuzz import STREAMS, UNITS, check
from gateway.adapters.gbt26875 import (
    ComponentAnalog,
    ComponentConfig,
    ComponentStatus,
    DataUnit,
    Frame,
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
    decode_description,
    decode_unit,
    deframe,
    encode_description,
    encode_frame,
    encode_unit,
    reply,
    time_sync,
)
from gateway.adapters.gbt_map import Binding, Component, PanelState

T0 = Time(5, 4, 10, 28, 11, 26)  # 2026-11-28 10:04:05 (local time)
T0_HEX = "05040a1c0b1a"
UITD = bytes.fromhex("0102030405a6")
CENTRE = bytes(6)
YAN_GAN = "d1ccb8d0"  # "烟感" in GB 18030
DESC = bytes.fromhex(YAN_GAN) + bytes(27)


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


# ---- frames, byte for byte -------------------------------------------------------------------


def test_confirm_frame_byte_for_byte() -> None:
    # serial 263 = 0x0107, low byte first; version 1.1; time s,min,h,day,month,year-2000;
    # source (centre) 00..00; destination the UITD; length 0; command 3. Checksum by hand:
    # 07+01 + 01+01 + 05+04+0a+1c+0b+1a + 0 + 01+02+03+04+05+a6 + 00+00 + 03 = 278 = 0x116 -> 16.
    expected = h("4040 0701 0101" + T0_HEX + "000000000000 0102030405a6 0000 03 16 2323")
    to = Frame(263, T.CMD_SEND, UITD, CENTRE, b"", T0)
    assert reply(to, T.CMD_CONFIRM, CENTRE, T0) == expected
    items, used = deframe(expected)
    assert used == len(expected)
    assert items == [Frame(263, 3, CENTRE, UITD, b"", T0, (1, 1))]


def test_length_is_low_byte_first_and_checksum_covers_the_data() -> None:
    data = h("15 01 01" + T0_HEX)  # unit 21, one object, status 1 (normal), time
    f = Frame(1, T.CMD_SEND, UITD, CENTRE, data, T0)
    raw = encode_frame(f)
    assert raw[2 + 22 : 2 + 24] == h("0900")  # 9 bytes of data
    assert raw[-3] == sum(raw[2:-3]) & 0xFF
    assert len(raw) == 30 + 9


def test_time_sync_is_a_control_command_with_unit_90() -> None:
    raw = time_sync(5, CENTRE, UITD, T0)
    (f,), _ = deframe(raw)
    assert isinstance(f, Frame) and f.command == T.CMD_CONTROL and f.dest == UITD
    assert f.data == h("5a 01" + T0_HEX)
    assert decode_unit(f.data) == DataUnit(90, (UitdTime(T0),))


# ---- every data unit type, byte for byte ---------------------------------------------------------

VECTORS: list[tuple[str, DataUnit]] = [
    # type 1: system type 1 (fire alarm), address 1, status 0x0003 (normal + fire), time
    ("01 01 01 01 0300" + T0_HEX, DataUnit(1, (SystemStatus(1, 1, 3, T0),))),
    # type 2: system 1/1, component type 40 (smoke), address 1023 = 0x3ff (4 bytes, low first),
    # status 0x0003, 31-byte description "烟感", time
    (
        "02 01 01 01 28 ff030000 0300" + YAN_GAN + "00" * 27 + T0_HEX,
        DataUnit(2, (ComponentStatus(1, 1, 40, 1023, 3, DESC, T0),)),
    ),
    # type 3: component type 91 (fire pump), address 9001 = 0x2329, analog type 5 (kPa),
    # value 3500 = 0x0dac; a second object with -5 = 0xfffb
    (
        "03 02 01 01 5b 29230000 05 ac0d" + T0_HEX + "01 01 5b 29230000 05 fbff" + T0_HEX,
        DataUnit(
            3,
            (
                ComponentAnalog(1, 1, 91, 9001, 5, 3500, T0),
                ComponentAnalog(1, 1, 91, 9001, 5, -5, T0),
            ),
        ),
    ),
    # type 4: operation flags 0x01 (reset), operator 7
    ("04 01 01 01 01 07" + T0_HEX, DataUnit(4, (SystemOperation(1, 1, 1, 7, T0),))),
    # type 5: software version 2.3
    ("05 01 01 01 02 03", DataUnit(5, (SystemVersion(1, 1, 2, 3),))),
    # type 6: configuration, length 4, "abcd"
    ("06 01 01 01 04 61626364", DataUnit(6, (SystemConfig(1, 1, b"abcd"),))),
    # type 7: component configuration: component 40 / 1023 and its description
    (
        "07 01 01 01 28 ff030000" + YAN_GAN + "00" * 27,
        DataUnit(7, (ComponentConfig(1, 1, 40, 1023, DESC),)),
    ),
    # type 8: the system's clock
    ("08 01 01 01" + T0_HEX, DataUnit(8, (SystemTime(1, 1, T0),))),
    # type 21: UITD status 0x01 (normal)
    ("15 01 01" + T0_HEX, DataUnit(21, (UitdStatus(1, T0),))),
    # type 24: UITD operation 0x20 (inspection reply), operator 0
    ("18 01 20 00" + T0_HEX, DataUnit(24, (UitdOperation(0x20, 0, T0),))),
    # type 25: UITD software 2.5
    ("19 01 02 05", DataUnit(25, (UitdVersion(2, 5),))),
    # type 26: UITD configuration, length 3, "xyz"
    ("1a 01 03 78797a", DataUnit(26, (UitdConfig(b"xyz"),))),
    # type 28: UITD clock
    ("1c 01" + T0_HEX, DataUnit(28, (UitdTime(T0),))),
]


def test_every_data_unit_type_byte_for_byte() -> None:
    assert {u.type for _, u in VECTORS} == {1, 2, 3, 4, 5, 6, 7, 8, 21, 24, 25, 26, 28}
    for hexa, unit in VECTORS:
        assert decode_unit(h(hexa)) == unit, hexa
        assert encode_unit(unit) == h(hexa), hexa


def test_descriptions_gb18030_cut_on_characters_and_cleaned() -> None:
    assert encode_description("烟感") == DESC
    assert decode_description(DESC) == "烟感"
    long = encode_description("一" * 20)  # 2 bytes each: 15 characters fit in 31 bytes
    assert len(long) == 31 and decode_description(long) == "一" * 15
    assert decode_description(b"A\x01B\x1b\x7fC\0junk") == "ABC"
    assert decode_description(b"\xff\xfe" + bytes(29)) in ("\ufffd\ufffd", "\ufffd")


def test_bad_units_are_rejected_with_reasons() -> None:
    assert decode_unit(b"") == Rejected("bad_unit", "0 bytes of application data")
    assert isinstance(r := decode_unit(h("09 01 00")), Rejected) and r.reason == "unknown_unit"
    assert isinstance(r := decode_unit(h("01 00")), Rejected) and r.reason == "bad_count"
    assert isinstance(r := decode_unit(h("01 02 01 01 0300" + T0_HEX)), Rejected)
    assert r.reason == "bad_count"
    assert isinstance(r := decode_unit(h("19 01 02 05 00")), Rejected) and r.reason == "bad_unit"


# ---- the stream ---------------------------------------------------------------


def frame(serial: int, data: bytes = b"") -> bytes:
    return encode_frame(Frame(serial, T.CMD_SEND, UITD, CENTRE, data, T0))


def test_garbage_half_frames_and_bad_checksums_resynchronise() -> None:
    good1, good2, good3 = frame(1), frame(2, h("19 01 02 05")), frame(3)
    corrupt = bytearray(frame(9))
    corrupt[-3] ^= 0xFF  # checksum
    stream = b"junk" + good1 + good2[:20] + good2 + bytes(corrupt) + b"@@@" + good3
    items, used = deframe(stream)
    frames = [i for i in items if isinstance(i, Frame)]
    assert [f.serial for f in frames] == [1, 2, 3]
    reasons = [i.reason for i in items if isinstance(i, Rejected)]
    assert "garbage" in reasons and "bad_checksum" in reasons
    denied = [i for i in items if isinstance(i, Rejected) and i.frame is not None]
    assert [d.frame.serial for d in denied if d.frame] == [9]
    assert used == len(stream)


def test_a_frame_split_anywhere_is_kept_for_the_next_read() -> None:
    raw = frame(7, h("19 01 02 05"))
    for cut in range(len(raw)):
        items, used = deframe(raw[:cut])
        assert not any(isinstance(i, Frame) for i in items)
        rest = raw[used:cut] + raw[cut:]
        items2, _ = deframe(rest)
        assert [i.serial for i in items2 if isinstance(i, Frame)] == [7], cut


def test_an_impossible_length_is_dropped() -> None:
    bad = bytearray(frame(1))
    bad[2 + 22 : 2 + 24] = (2000).to_bytes(2, "little")
    items, _ = deframe(bytes(bad) + frame(2))
    assert items[0] == Rejected("bad_length", "data length 2000 > 1024")
    assert [i.serial for i in items if isinstance(i, Frame)] == [2]


# ---- property tests ---------------------------------------------------------------


@given(UNITS)
def test_every_unit_type_round_trips(unit: DataUnit) -> None:
    raw = encode_unit(unit)
    assert decode_unit(raw) == unit
    f = Frame(1, 2, UITD, CENTRE, raw, T0)
    if len(raw) <= 1024:
        (got,), _ = deframe(encode_frame(f))
        assert got == f


@settings(max_examples=300)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    items, used = deframe(data)
    assert 0 <= used <= len(data)
    decode_unit(data)
    for i in items:
        if isinstance(i, Frame):
            decode_unit(i.data)


@given(st.lists(st.tuples(st.binary(max_size=40).filter(lambda b: b"@" not in b), UNITS)))
def test_garbage_between_frames_is_skipped(parts: list[tuple[bytes, DataUnit]]) -> None:
    stream = b""
    sent = []
    for n, (junk, unit) in enumerate(parts):
        data = encode_unit(unit)
        if len(data) > 1024:
            continue
        stream += junk + frame(n, data)
        sent.append(n)
    items, used = deframe(stream)
    assert [i.serial for i in items if isinstance(i, Frame)] == sent
    assert used == len(stream)


@given(st.integers(946_771_200_000, 4_102_358_400_000), st.integers(-720, 840))
def test_time_labels_convert_both_ways(ms: int, offset: int) -> None:
    ms -= ms % 1000
    t = Time.from_epoch_ms(ms, offset)
    assert t.valid() and t.epoch_ms(offset) == ms


# ---- the mapping ---------------------------------------------------------------

RX = 1_795_831_445_000  # T0 in UTC+8


def bodies(out: list[tuple[int, str]]) -> list[dict[str, object]]:
    return [json.loads(b) for _, b in out]


def test_component_status_edges_become_panel_events() -> None:
    st_ = PanelState(Binding("panel-1", components={(1, 3012): Component(None, "3", "B3 12F")}))

    def status(word: int, addr: int = 3012) -> list[dict[str, object]]:
        unit = DataUnit(2, (ComponentStatus(1, 1, 40, addr, word, DESC, T0),))
        return bodies(st_.records(unit, rx_ms=RX, clock_trusted=True))

    fire = status(0b11)
    assert [(b["d"], b["e"]) for b in fire] == [("panel-1", "fire")]
    x = fire[0]["x"]
    assert isinstance(x, dict)
    assert x["component_type"] == "smoke_detector" and x["component_addr"] == 3012
    assert x["building"] == "3" and x["location"] == "B3 12F" and x["text"] == "烟感"
    assert x["system_type"] == "fire_alarm" and fire[0]["ts"] == RX and "gt" not in fire[0]
    assert status(0b11) == []  # no edge, no event
    assert [b["e"] for b in status(0b111)] == ["fault"]
    assert [b["e"] for b in status(0b1)] == ["normal"]
    assert [b["e"] for b in status(0b1001)] == ["disabled"]
    assert [b["e"] for b in status(0b1)] == ["enabled"]
    pf = status(1 | 1 << 8)
    assert [(b["e"], b["x"]["power"]) for b in pf] == [("power_fault", "component")]  # type: ignore[index]


def test_system_status_power_faults_and_reset() -> None:
    st_ = PanelState(Binding("panel-1"))
    word = 1 | 1 << 8 | 1 << 10
    out = bodies(
        st_.records(DataUnit(1, (SystemStatus(1, 1, word, T0),)), rx_ms=RX, clock_trusted=True)
    )
    assert [(b["e"], b["x"]["power"]) for b in out] == [
        ("power_fault", "main"),
        ("power_fault", "bus"),
    ]  # type: ignore[index]
    op = bodies(
        st_.records(
            DataUnit(4, (SystemOperation(1, 1, 0b11, 2, T0),)), rx_ms=RX, clock_trusted=True
        )
    )
    assert [b["e"] for b in op] == ["reset", "operation"]


def test_analog_values_become_canonical_telemetry() -> None:
    b = Binding("panel-1", components={(1, 9001): Component("wp-1", None, None)})
    st_ = PanelState(b)
    unit = DataUnit(
        3,
        (
            ComponentAnalog(1, 1, 91, 9001, 5, 3500, T0),  # 350.0 kPa
            ComponentAnalog(1, 1, 17, 77, 9, 5, T0),  # residual current 0.5 A
            ComponentAnalog(1, 1, 18, 78, 3, 655, T0),  # cable 65.5 degC
        ),
    )
    out = bodies(st_.records(unit, rx_ms=RX, clock_trusted=True))
    assert [(r["d"], r["m"]) for r in out] == [
        ("wp-1", {"pressure_mpa": 0.35}),
        ("panel-1", {"residual_current_ma_1_77": 500.0}),
        ("panel-1", {"cable_temp_c_1_78": 65.5}),
    ]


def test_impossible_unit_times_fall_back_to_the_gateway_clock() -> None:
    st_ = PanelState(Binding("panel-1"))
    bad = Time(99, 99, 99, 0, 13, 0)
    out = bodies(
        st_.records(DataUnit(1, (SystemStatus(1, 1, 3, bad),)), rx_ms=RX, clock_trusted=True)
    )
    assert out[0]["ts"] == RX and out[0]["gt"] is True


@settings(max_examples=100, deadline=None)
@given(STREAMS)
def test_the_fuzz_target_holds(example: Any) -> None:
    check(example)  # anju fuzz gbt26875 runs the same property for as long as asked
