"""GB/T 26875.3-2011 codec: frames and application data units, pure (no I/O, no clock).

Frame (all multi-byte numbers low byte first, as the standard says)::

    '@@' | serial (2) | version (2: major, minor) | time (6: s, min, h, day, month, year-2000)
         | source address (6) | destination address (6) | data length (2, <= 1024)
         | command (1) | application data (length) | checksum (1) | '##'

The checksum is the sum of the bytes from the serial number through the application data,
low 8 bits. Addresses are kept as the 6 bytes in frame order (``bytes.hex()`` names them).

``deframe`` splits a byte stream into frames and rejections and says how many bytes it used;
the caller keeps the rest for the next read. It never raises: garbage before a start marker is
skipped (one ``garbage`` rejection per run), a start whose length is impossible or whose end
marker is missing is skipped by one byte so that the next ``@@`` is found (a ``@@`` inside a
corrupt frame is tried as a start too, so no good frame after it is lost), and a frame with a
wrong checksum is a ``bad_checksum`` rejection that keeps its header (the server denies it)
and is searched again from its next byte.

``decode_unit`` decodes application data into a ``DataUnit`` or a rejection. ``encode_frame``
and ``encode_unit`` are their inverses (used for confirm, deny, time sync and the simulator).
Rejection reasons are metric labels (``REASONS``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from gateway.adapters import gbt_tables as T

START: Final = b"@@"
END: Final = b"##"
HEADER_LEN: Final = 25  # serial .. command, after the start marker
OVERHEAD: Final = 2 + HEADER_LEN + 1 + 2
MAX_DATA: Final = 1024
DESC_LEN: Final = 31
DEFAULT_VERSION: Final = (1, 1)

REASONS: Final = (
    "garbage",
    "truncated",
    "bad_length",
    "bad_end",
    "bad_checksum",
    "bad_unit",
    "unknown_unit",
    "bad_count",
)

_HEAD: Final = struct.Struct("<HBB6B6s6sHB")


@dataclass(frozen=True, slots=True)
class Time:
    """A GB/T 26875.3 time label: the six bytes as they are (s, min, h, day, month, year-2000)."""

    second: int = 0
    minute: int = 0
    hour: int = 0
    day: int = 1
    month: int = 1
    year: int = 0  # years since 2000

    def to_bytes(self) -> bytes:
        return bytes((self.second, self.minute, self.hour, self.day, self.month, self.year))

    @classmethod
    def from_bytes(cls, b: bytes) -> Time:
        return cls(b[0], b[1], b[2], b[3], b[4], b[5])

    def valid(self) -> bool:
        return (
            self.second < 60
            and self.minute < 60
            and self.hour < 24
            and 1 <= self.day <= _days_in(self.month, self.year)
            and 1 <= self.month <= 12
            and self.year < 100
        )

    def epoch_ms(self, utc_offset_min: int) -> int | None:
        """Milliseconds since the epoch for a time label in local time ``utc_offset_min`` east
        of UTC; None when the label is not a real date."""
        if not self.valid():
            return None
        days = _days_from_civil(2000 + self.year, self.month, self.day)
        secs = days * 86400 + self.hour * 3600 + self.minute * 60 + self.second
        return (secs - utc_offset_min * 60) * 1000

    @classmethod
    def from_epoch_ms(cls, ms: int, utc_offset_min: int) -> Time:
        secs = ms // 1000 + utc_offset_min * 60
        days, rem = divmod(secs, 86400)
        y, m, d = _civil_from_days(days)
        return cls(rem % 60, rem // 60 % 60, rem // 3600, d, m, max(0, min(255, y - 2000)))


def _days_in(month: int, year: int) -> int:
    if month == 2:
        y = 2000 + year
        return 29 if y % 4 == 0 and (y % 100 != 0 or y % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _days_from_civil(y: int, m: int, d: int) -> int:
    # Howard Hinnant's algorithm: days since 1970-01-01 (no datetime, no time zone database).
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z: int) -> tuple[int, int, int]:
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + (3 if mp < 10 else -9)
    return y + (m <= 2), m, d


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame; ``data`` is the raw application data (``decode_unit`` reads it)."""

    serial: int
    command: int
    source: bytes
    dest: bytes
    data: bytes = b""
    time: Time = Time()
    version: tuple[int, int] = DEFAULT_VERSION


@dataclass(frozen=True, slots=True)
class Rejected:
    """Bytes that are not a usable frame: ``reason`` is a metric label. ``frame`` is the
    header of a well-framed but corrupt frame (bad checksum), so that it can be denied."""

    reason: str
    detail: str
    frame: Frame | None = None


def checksum(b: bytes | bytearray) -> int:
    return sum(b) & 0xFF


def encode_frame(f: Frame) -> bytes:
    if len(f.data) > MAX_DATA:
        raise ValueError(f"application data of {len(f.data)} bytes > {MAX_DATA}")
    t = f.time
    body = _HEAD.pack(
        f.serial & 0xFFFF,
        f.version[0],
        f.version[1],
        t.second,
        t.minute,
        t.hour,
        t.day,
        t.month,
        t.year,
        f.source,
        f.dest,
        len(f.data),
        f.command,
    )
    body += f.data
    return START + body + bytes((checksum(body),)) + END


def deframe(
    buf: bytes | bytearray, *, max_data: int = MAX_DATA
) -> tuple[list[Frame | Rejected], int]:
    """Frames and rejections in ``buf``, and how many bytes were used (keep the rest)."""
    out: list[Frame | Rejected] = []
    n = len(buf)
    i = 0
    while i < n:
        j = buf.find(START, i)
        if j < 0:
            # Keep a trailing '@' (it may be half a start marker).
            keep = 1 if buf[n - 1 : n] == b"@" else 0
            if n - keep > i:
                out.append(Rejected("garbage", f"{n - keep - i} bytes without a start marker"))
            return out, n - keep
        if j > i:
            out.append(Rejected("garbage", f"{j - i} bytes before a start marker"))
        i = j
        if n - i < 2 + HEADER_LEN:
            if _later_frame(buf, i, max_data) is None:
                return out, i
            out.append(Rejected("truncated", "a half frame followed by a whole one"))
            i += 1
            continue
        length = buf[i + 24] | buf[i + 25] << 8
        if length > max_data:
            out.append(Rejected("bad_length", f"data length {length} > {max_data}"))
            i += 1
            continue
        total = OVERHEAD + length
        if n - i < total:
            # Wait for the rest, unless a whole, valid frame starts inside what we have: then
            # this start was a half frame (a UITD that reset mid-frame), and waiting would
            # hold the good frames behind it.
            if _later_frame(buf, i, max_data) is None:
                return out, i
            out.append(Rejected("truncated", "a half frame followed by a whole one"))
            i += 1
            continue
        if buf[i + total - 2 : i + total] != END:
            out.append(Rejected("bad_end", "no end marker where the length says"))
            i += 1
            continue
        body = bytes(buf[i + 2 : i + 2 + HEADER_LEN + length])
        frame = _frame(body)
        if checksum(body) != buf[i + total - 3]:
            # Denied, and searched again from the next byte: a corrupt length may have
            # framed good frames inside this one.
            out.append(Rejected("bad_checksum", f"serial {frame.serial}", frame))
            i += 1
            continue
        out.append(frame)
        i += total
    return out, i


def _later_frame(buf: bytes | bytearray, i: int, max_data: int) -> int | None:
    """The start of a whole frame with a good checksum after ``i``, if there is one."""
    n = len(buf)
    k = buf.find(START, i + 1)
    while k >= 0 and n - k >= OVERHEAD:
        length = buf[k + 24] | buf[k + 25] << 8
        total = OVERHEAD + length
        if (
            length <= max_data
            and n - k >= total
            and buf[k + total - 2 : k + total] == END
            and checksum(buf[k + 2 : k + total - 3]) == buf[k + total - 3]
        ):
            return k
        k = buf.find(START, k + 1)
    return None


def _frame(body: bytes) -> Frame:
    (serial, v1, v2, s, mi, h, d, mo, y, src, dst, _len, cmd) = _HEAD.unpack_from(body)
    return Frame(
        serial=serial,
        command=cmd,
        source=src,
        dest=dst,
        data=body[HEADER_LEN:],
        time=Time(s, mi, h, d, mo, y),
        version=(v1, v2),
    )


# ---- application data units ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SystemStatus:  # type 1
    system_type: int
    system_addr: int
    status: int
    time: Time


@dataclass(frozen=True, slots=True)
class ComponentStatus:  # type 2
    system_type: int
    system_addr: int
    component_type: int
    component_addr: int
    status: int
    description: bytes  # 31 bytes, GB 18030, NUL padded
    time: Time


@dataclass(frozen=True, slots=True)
class ComponentAnalog:  # type 3
    system_type: int
    system_addr: int
    component_type: int
    component_addr: int
    analog_type: int
    value: int  # signed 16-bit, in the analog type's resolution
    time: Time


@dataclass(frozen=True, slots=True)
class SystemOperation:  # type 4
    system_type: int
    system_addr: int
    flags: int
    operator: int
    time: Time


@dataclass(frozen=True, slots=True)
class SystemVersion:  # type 5
    system_type: int
    system_addr: int
    major: int
    minor: int


@dataclass(frozen=True, slots=True)
class SystemConfig:  # type 6
    system_type: int
    system_addr: int
    description: bytes  # up to 255 bytes


@dataclass(frozen=True, slots=True)
class ComponentConfig:  # type 7
    system_type: int
    system_addr: int
    component_type: int
    component_addr: int
    description: bytes  # 31 bytes


@dataclass(frozen=True, slots=True)
class SystemTime:  # type 8
    system_type: int
    system_addr: int
    time: Time


@dataclass(frozen=True, slots=True)
class UitdStatus:  # type 21
    status: int
    time: Time


@dataclass(frozen=True, slots=True)
class UitdOperation:  # type 24
    flags: int
    operator: int
    time: Time


@dataclass(frozen=True, slots=True)
class UitdVersion:  # type 25
    major: int
    minor: int


@dataclass(frozen=True, slots=True)
class UitdConfig:  # type 26
    description: bytes


@dataclass(frozen=True, slots=True)
class UitdTime:  # type 28 (and 90, sync the UITD's clock)
    time: Time


InfoObject = (
    SystemStatus
    | ComponentStatus
    | ComponentAnalog
    | SystemOperation
    | SystemVersion
    | SystemConfig
    | ComponentConfig
    | SystemTime
    | UitdStatus
    | UitdOperation
    | UitdVersion
    | UitdConfig
    | UitdTime
)


@dataclass(frozen=True, slots=True)
class DataUnit:
    """One application data unit: its type (类型标志) and its information objects."""

    type: int
    objects: tuple[InfoObject, ...]


class _Bad(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# Fixed object sizes; None: variable (a length byte, then that many bytes).
_SIZES: Final[dict[int, int | None]] = {
    1: 10,
    2: 46,
    3: 16,
    4: 10,
    5: 4,
    6: None,
    7: 38,
    8: 8,
    21: 7,
    24: 8,
    25: 2,
    26: None,
    28: 6,
    90: 6,
}


def _t(b: bytes, at: int) -> Time:
    return Time.from_bytes(b[at : at + 6])


def _u32(b: bytes, at: int) -> int:
    v: int = struct.unpack_from("<I", b, at)[0]
    return v


def _decode_object(kind: int, b: bytes) -> InfoObject:
    if kind == 1:
        return SystemStatus(b[0], b[1], b[2] | b[3] << 8, _t(b, 4))
    if kind == 2:
        return ComponentStatus(
            b[0], b[1], b[2], _u32(b, 3), b[7] | b[8] << 8, b[9 : 9 + DESC_LEN], _t(b, 40)
        )
    if kind == 3:
        value: int = struct.unpack_from("<h", b, 8)[0]
        return ComponentAnalog(b[0], b[1], b[2], _u32(b, 3), b[7], value, _t(b, 10))
    if kind == 4:
        return SystemOperation(b[0], b[1], b[2], b[3], _t(b, 4))
    if kind == 5:
        return SystemVersion(b[0], b[1], b[2], b[3])
    if kind == 6:
        return SystemConfig(b[0], b[1], b[3:])
    if kind == 7:
        return ComponentConfig(b[0], b[1], b[2], _u32(b, 3), b[7 : 7 + DESC_LEN])
    if kind == 8:
        return SystemTime(b[0], b[1], _t(b, 2))
    if kind == 21:
        return UitdStatus(b[0], _t(b, 1))
    if kind == 24:
        return UitdOperation(b[0], b[1], _t(b, 2))
    if kind == 25:
        return UitdVersion(b[0], b[1])
    if kind == 26:
        return UitdConfig(b[1:])
    return UitdTime(_t(b, 0))  # 28, 90


def decode_unit(data: bytes) -> DataUnit | Rejected:
    """The data unit in a frame's application data (which must hold exactly one)."""
    try:
        return _decode_unit(data)
    except _Bad as exc:
        return Rejected(exc.reason, exc.detail)


def _decode_unit(data: bytes) -> DataUnit:
    if len(data) < 2:
        raise _Bad("bad_unit", f"{len(data)} bytes of application data")
    kind, count = data[0], data[1]
    if kind not in _SIZES:
        raise _Bad("unknown_unit", f"data unit type {kind}")
    if count == 0:
        raise _Bad("bad_count", "no information object")
    size = _SIZES[kind]
    objs: list[InfoObject] = []
    at = 2
    for _ in range(count):
        if size is None:
            head = 3 if kind == 6 else 1
            if at + head > len(data):
                raise _Bad("bad_unit", f"type {kind}: truncated object")
            n = head + data[at + head - 1]
        else:
            n = size
        if at + n > len(data):
            raise _Bad("bad_count", f"type {kind}: {count} objects do not fit in {len(data)} bytes")
        objs.append(_decode_object(kind, data[at : at + n]))
        at += n
    if at != len(data):
        raise _Bad("bad_unit", f"type {kind}: {len(data) - at} bytes after the objects")
    return DataUnit(kind, tuple(objs))


def _encode_object(o: InfoObject) -> bytes:
    if isinstance(o, SystemStatus):
        return struct.pack("<BBH", o.system_type, o.system_addr, o.status) + o.time.to_bytes()
    if isinstance(o, ComponentStatus):
        return (
            struct.pack(
                "<BBBIH", o.system_type, o.system_addr, o.component_type, o.component_addr, o.status
            )
            + _desc(o.description)
            + o.time.to_bytes()
        )
    if isinstance(o, ComponentAnalog):
        return (
            struct.pack(
                "<BBBIBh",
                o.system_type,
                o.system_addr,
                o.component_type,
                o.component_addr,
                o.analog_type,
                o.value,
            )
            + o.time.to_bytes()
        )
    if isinstance(o, SystemOperation):
        return bytes((o.system_type, o.system_addr, o.flags, o.operator)) + o.time.to_bytes()
    if isinstance(o, SystemVersion):
        return bytes((o.system_type, o.system_addr, o.major, o.minor))
    if isinstance(o, SystemConfig):
        return bytes((o.system_type, o.system_addr, len(o.description))) + o.description
    if isinstance(o, ComponentConfig):
        return struct.pack(
            "<BBBI", o.system_type, o.system_addr, o.component_type, o.component_addr
        ) + _desc(o.description)
    if isinstance(o, SystemTime):
        return bytes((o.system_type, o.system_addr)) + o.time.to_bytes()
    if isinstance(o, UitdStatus):
        return bytes((o.status,)) + o.time.to_bytes()
    if isinstance(o, UitdOperation):
        return bytes((o.flags, o.operator)) + o.time.to_bytes()
    if isinstance(o, UitdVersion):
        return bytes((o.major, o.minor))
    if isinstance(o, UitdConfig):
        return bytes((len(o.description),)) + o.description
    return o.time.to_bytes()


def _desc(b: bytes) -> bytes:
    if len(b) > DESC_LEN:
        raise ValueError(f"description of {len(b)} bytes > {DESC_LEN}")
    return b.ljust(DESC_LEN, b"\0")


def encode_unit(u: DataUnit) -> bytes:
    if not 1 <= len(u.objects) <= 255:
        raise ValueError("a data unit holds 1 to 255 objects")
    return bytes((u.type, len(u.objects))) + b"".join(_encode_object(o) for o in u.objects)


def encode_description(text: str) -> bytes:
    """A description as the standard stores it: GB 18030, cut to 31 bytes on a character
    boundary, NUL padded."""
    out = b""
    for ch in text:
        b = ch.encode("gb18030", errors="replace")
        if len(out) + len(b) > DESC_LEN:
            break
        out += b
    return out.ljust(DESC_LEN, b"\0")


def decode_description(b: bytes) -> str:
    """A description as text: GB 18030 (a superset of GB 2312), up to the first NUL, without
    control characters; undecodable bytes become U+FFFD."""
    raw = b.split(b"\0", 1)[0]
    text = raw.decode("gb18030", errors="replace")
    return "".join(c for c in text if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF).strip()


# ---- replies -----------------------------------------------------------------------------------


def reply(to: Frame, command: int, centre: bytes, time: Time) -> bytes:
    """A confirm (3) or deny (6) for ``to``: same serial number, addresses swapped, no data."""
    return encode_frame(
        Frame(
            serial=to.serial,
            command=command,
            source=centre,
            dest=to.source,
            time=time,
            version=to.version,
        )
    )


def time_sync(serial: int, centre: bytes, uitd: bytes, now: Time) -> bytes:
    """A control command (1) setting the UITD's clock (data unit 90, one time object)."""
    data = encode_unit(DataUnit(T.UNIT_SYNC_CLOCK, (UitdTime(now),)))
    return encode_frame(
        Frame(serial=serial, command=T.CMD_CONTROL, source=centre, dest=uitd, data=data, time=now)
    )
