"""The deployment's time zone: every time a person reads (logs, the demo's terminal) is shown
in it. ``ANJU_TIMEZONE`` (an IANA name), Asia/Shanghai by default."""

from __future__ import annotations

import datetime as dt
import logging
import os
from functools import cache
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from anju.errors import ConfigError

DEFAULT_TIMEZONE: Final = "Asia/Shanghai"
_CHINA = dt.timezone(dt.timedelta(hours=8), "CST")


@cache
def zone(name: str | None = None) -> dt.tzinfo:
    """The zone called ``name`` (default: ``ANJU_TIMEZONE``, else Asia/Shanghai)."""
    name = name or os.environ.get("ANJU_TIMEZONE") or DEFAULT_TIMEZONE
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        if name == DEFAULT_TIMEZONE:  # a system without tzdata: China has no DST
            return _CHINA
        raise ConfigError(
            f"ANJU_TIMEZONE={name!r} is not a time zone; expected an IANA name such as "
            f"{DEFAULT_TIMEZONE}"
        ) from exc


def now() -> dt.datetime:
    return dt.datetime.now(zone())


def clock(text: str | None = None) -> str:
    """``HH:MM:SS`` in the zone, of an RFC 3339 time (or now); the text itself if unreadable."""
    if text is None:
        return now().strftime("%H:%M:%S")
    try:
        t = dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return str(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.astimezone(zone()).strftime("%Y-%m-%d %H:%M:%S")


class LocalFormatter(logging.Formatter):
    """Log times in the deployment's zone, with its offset (``2026-11-29 08:41:02,118+0800``)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        t = dt.datetime.fromtimestamp(record.created, zone())
        if datefmt:
            return t.strftime(datefmt)
        return f"{t.strftime('%Y-%m-%d %H:%M:%S')},{int(record.msecs):03d}{t.strftime('%z')}"
