"""The canonical, storable form of what devices and gateways send: one rule for every boundary.

Every boundary (LAN decode, uplink decode, ingest, rules, alert store, API, adapters) either
accepts an input in the form below or rejects it with an ``InputError`` whose ``reason`` is a
metric label. Nothing else may raise past a boundary.

The canonical form, chosen so that a value survives PostgreSQL (``text`` and ``jsonb``), SQLite
and a JSON round trip unchanged:

- Strings: U+0000 (which PostgreSQL cannot store), lone surrogates (which UTF-8 cannot encode)
  and the other C0 control characters except TAB, LF and CR become U+FFFD, the replacement
  character: the reading is kept, and a person reading it sees that something was replaced.
  Object keys follow the same rule.
- Numbers: finite only; ``-0.0`` becomes ``0.0`` (``jsonb`` has no negative zero); integers of
  at most ``MAX_INT_DIGITS`` digits (a JSON integer of 4,300 digits would otherwise stop Python's
  parser, and nothing a device measures needs more than 64 bits).
- Nesting: at most ``MAX_DEPTH`` levels of objects and arrays (deeper input would exhaust the
  parser's recursion; no device kind needs more than three).
- Size: the caller's byte limit is checked before parsing.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

MAX_DEPTH: Final = 16
MAX_INT_DIGITS: Final = 19
REPLACEMENT: Final = "\ufffd"

# What canonical strings may not contain: C0 controls except TAB/LF/CR, and lone surrogates.
_BAD_CHARS: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")

REASONS: Final = ("too_large", "bad_json", "too_deep", "bad_number")


class InputError(ValueError):
    """Input that has no canonical form; ``reason`` is the metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def clean_str(s: str) -> str:
    """``s`` in canonical form (unchanged, and not copied, when it already is)."""
    if _BAD_CHARS.search(s) is None:
        return s
    return _BAD_CHARS.sub(REPLACEMENT, s)


def is_clean_str(s: str) -> bool:
    return _BAD_CHARS.search(s) is None


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise InputError("bad_number", f"integer of {len(text)} digits")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > 64:
        raise InputError("bad_number", f"number of {len(text)} characters")
    v = float(text)
    if not math.isfinite(v):
        raise InputError("bad_number", f"{text[:32]} is out of range")
    return v


def _parse_constant(name: str) -> float:
    raise InputError("bad_number", f"{name} is not a number")


def loads(payload: bytes | str, *, max_bytes: int) -> Any:
    """Parse JSON with bounded size, integers and floats; nesting is checked by ``clean``.

    Raises ``InputError`` for anything that is not JSON within those bounds; never
    ``RecursionError``, ``UnicodeDecodeError`` or ``ValueError`` of another kind.
    """
    if len(payload) > max_bytes:
        raise InputError("too_large", f"{len(payload)} bytes > {max_bytes}")
    if isinstance(payload, bytes | bytearray | memoryview):
        try:
            text = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError("bad_json", f"not UTF-8: {exc.reason}") from exc
    else:
        text = payload
    try:
        return json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except InputError:
        raise
    except RecursionError as exc:
        raise InputError("too_deep", "nested deeper than the parser allows") from exc
    except ValueError as exc:  # JSONDecodeError, and int() of an odd literal
        raise InputError("bad_json", str(exc)[:120]) from exc


def clean(obj: Any, *, max_depth: int = MAX_DEPTH) -> Any:
    """A canonical copy of a parsed JSON value (see the module's rules); ``InputError`` if none.

    Iterative, so that no input can exhaust the interpreter's recursion.
    """
    root: list[Any] = [None]
    # (container to fill, key or index, value, depth of the value)
    stack: list[tuple[Any, Any, Any, int]] = [(root, 0, obj, 1)]
    while stack:
        parent, key, v, depth = stack.pop()
        if isinstance(v, str):
            parent[key] = clean_str(v)
        elif v is None or isinstance(v, bool):
            parent[key] = v
        elif isinstance(v, int):
            if v.bit_length() > 64:
                raise InputError("bad_number", "integer beyond 64 bits")
            parent[key] = v
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise InputError("bad_number", "not a finite number")
            parent[key] = v + 0.0  # -0.0 + 0.0 == 0.0
        elif isinstance(v, dict):
            if depth > max_depth:
                raise InputError("too_deep", f"more than {max_depth} levels of nesting")
            d: dict[str, Any] = {}
            parent[key] = d
            for k, item in v.items():
                if not isinstance(k, str):
                    raise InputError("bad_json", "object key is not a string")
                ck = clean_str(k)
                d[ck] = None  # keeps the keys' order; the value is filled in below
                stack.append((d, ck, item, depth + 1))
        elif isinstance(v, list | tuple):
            if depth > max_depth:
                raise InputError("too_deep", f"more than {max_depth} levels of nesting")
            lst: list[Any] = [None] * len(v)
            parent[key] = lst
            for i, item in enumerate(v):
                stack.append((lst, i, item, depth + 1))
        else:
            raise InputError("bad_json", f"{type(v).__name__} is not a JSON value")
    return root[0]


def dumps(obj: Any) -> str:
    """Compact JSON text of a canonical value (UTF-8 as is, no NaN)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
