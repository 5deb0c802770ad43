"""``anju fuzz NAME --minutes N``: property-based fuzzing (hypothesis) of the boundaries, for
longer than the CI suites run them.

Each target is ``prepare(db_url) -> Fuzzing`` in a module registered in ``TARGETS`` (imported
only when run, so the gateway's install does not need the backend's extras): a strategy, a
check that raises on a failed property, and a ``close``. The same targets run in CI, bounded
(``tests/test_fuzz_*.py``). Targets that need PostgreSQL get a private server unless ``--db``
names one.

This module also holds the ``uplink`` target (pure) and the strategies shared by all targets:
JSON values with what breaks naive code (NUL, lone surrogates, control characters, ``-0.0``,
integers beyond 64 bits, deep nesting, huge integer literals), and uplink batches of them.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anju import canonical
from anju.uplink import (
    MAX_SEQ,
    UplinkDecodeError,
    compress_batch,
    decode_parts,
    up_topic,
)

TARGETS: Final = {
    "uplink": ("anju.fuzz", "the uplink decoder (anju.uplink.decode_parts), pure"),
    "ingest": ("backend.fuzzing", "the ingest writer against a real PostgreSQL"),
    "rules": ("backend.fuzzing_rules", "the rules and the alert store against a real PostgreSQL"),
    "gbt26875": ("gateway.adapters.fuzz", "the GB/T 26875.3 codec and mapping, pure"),
    "lan": ("gateway.fuzz", "the gateway's LAN decoder into a real outbox (SQLite)"),
}

GW: Final = "gw-c0"
POISON: Final = ("\x00", "\ud800", "\udfff", "\x1b", "\x7f", "\u2028", "\ufeff", "\ufffd", "é")


@dataclass
class Fuzzing:
    """One target, ready: ``check(example)`` raises when a property fails."""

    strategy: st.SearchStrategy[Any]
    check: Callable[[Any], None]
    close: Callable[[], None] = lambda: None
    needs_db: bool = False


@dataclass
class Figures:
    examples: int = 0
    failures: int = 0
    seconds: float = 0.0
    failed: list[str] = field(default_factory=list)


# ---- strategies ----------------------------------------------------------------------------

texts = st.lists(st.one_of(st.text(max_size=4), st.sampled_from(POISON)), max_size=5).map("".join)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.just(-0.0),
    texts,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=12,
)
# JSON text no encoder writes: what a broken or hostile gateway may.
RAW_POISON: Final = (
    "[" * 5000 + "]" * 5000,
    "9" * 5000,
    "-" + "1" * 30,
    '"\\ud800"',
    '"\\u0000"',
    "1e999",
    "NaN",
    '{"a":' * 40 + "1" + "}" * 40,
)


@st.composite
def record_texts(draw: st.DrawFn, seq: int) -> str:
    """One record as a gateway's outbox would splice it (maybe with a poison fragment)."""
    boot = draw(st.sampled_from(("boot-a", "boot-b")))
    kind = draw(st.sampled_from(("t", "e", "s")))
    device = draw(st.sampled_from(("c0-smoke_detector-0", "c0-elevator-0", "c0-fire_door-1")))
    ts = draw(st.integers(min_value=1_700_000_000_000, max_value=1_800_000_000_000))
    rx = ts + draw(st.sampled_from((0, 5, -40_000_000, 30_000_000)))
    head = f'{{"seq":{seq},"b":"{boot}","d":"{device}","k":"{kind}","ts":{ts},"rx":{rx}'
    if draw(st.integers(0, 9)) == 0:
        frag = draw(st.sampled_from(RAW_POISON))
        key = {"t": "m", "e": "x", "s": "s"}[kind]
        extra = ',"e":"alarm"' if kind == "e" else ""
        return f'{head}{extra},"{key}":{{"v":{frag}}}}}'
    metrics = draw(st.dictionaries(texts, values, max_size=4))
    if kind == "t":
        body = {"m": metrics}
    elif kind == "e":
        body = {"e": draw(st.sampled_from(("alarm", "fault", "door_open", "x\x00"))), "x": metrics}
    else:
        body = {"s": {"online": draw(st.booleans()), **metrics}}
    return head + "," + json.dumps(body, ensure_ascii=True)[1:]


Batch = tuple[bytes, int | None, bool]


@st.composite
def batches(draw: st.DrawFn, *, mutate: bool = True) -> Batch:
    """(payload, records in it if its envelope is intact, whether to send it compressed)."""
    first = draw(st.integers(min_value=1, max_value=MAX_SEQ // 2))
    n = draw(st.integers(min_value=1, max_value=6))
    rows = [draw(record_texts(first + i)) for i in range(n)]
    payload = f'{{"v":1,"gw":"{GW}","recs":[{",".join(rows)}]}}'.encode()
    if mutate and draw(st.integers(0, 7)) == 0:
        cut = draw(st.integers(0, len(payload)))
        junk = draw(st.binary(max_size=8))
        return payload[:cut] + junk, None, draw(st.booleans())
    return payload, n, draw(st.booleans())


def wire(payload: bytes, compressed: bool) -> bytes:
    return compress_batch(payload, above=0) if compressed else payload


# ---- the uplink target ---------------------------------------------------------------------


def assert_canonical(v: Any) -> None:
    """``v`` is in canonical form: it survives jsonb and UTF-8 unchanged."""
    text = canonical.dumps(v)
    text.encode("utf-8")  # no lone surrogate
    assert "\\u0000" not in text and "\x00" not in text, text[:200]
    assert canonical.clean(v) == v


def check_uplink(example: Batch) -> None:
    payload, n, compressed = example
    try:
        d = decode_parts(up_topic(GW), wire(payload, compressed))
    except UplinkDecodeError:
        return  # a batch rejected whole, with a reason
    for r in d.records:
        assert 0 <= r.seq < MAX_SEQ and r.gateway_id == GW
        for part in (r.metrics, r.data, r.status, r.event_type, r.boot_id):
            if part is not None:
                assert_canonical(part)
    for x in d.rejected:
        assert canonical.is_clean_str(x.raw) and x.reason
    if n is not None:
        assert len(d.records) + len(d.rejected) == n, (len(d.records), len(d.rejected), n)


def prepare(_db_url: str | None) -> Fuzzing:
    return Fuzzing(batches(), check_uplink)


# ---- the runner ----------------------------------------------------------------------------


@contextlib.contextmanager
def _database(db_url: str | None, needed: bool) -> Iterator[str | None]:
    if db_url or not needed:
        yield db_url
        return
    import tempfile

    from anju.servers import PrivatePostgres

    with tempfile.TemporaryDirectory(prefix="anju-fuzz-") as tmp:
        pg = PrivatePostgres(Path(tmp)).start()
        try:
            yield pg.create_database("fuzz")
        finally:
            pg.destroy()


def run(name: str, *, minutes: float, db_url: str | None = None) -> Figures:
    """Run a target for ``minutes``; failures are counted (and the first few kept), never
    raised."""
    module, _desc = TARGETS[name]
    mod = importlib.import_module(module)
    needs_db = bool(getattr(mod, "NEEDS_DB", False))
    figures = Figures()
    started = time.monotonic()
    deadline = started + minutes * 60
    with _database(db_url, needs_db) as url:
        fz: Fuzzing = mod.prepare(url)
        try:
            while time.monotonic() < deadline:

                @settings(
                    max_examples=200,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                @given(fz.strategy)
                def prop(example: Any) -> None:
                    figures.examples += 1
                    fz.check(example)

                try:
                    prop()
                except Exception as exc:  # a failed property: counted, and the run goes on
                    figures.failures += 1
                    if len(figures.failed) < 5:
                        figures.failed.append(f"{type(exc).__name__}: {exc}"[:2000])
        finally:
            fz.close()
    figures.seconds = round(time.monotonic() - started, 1)
    return figures
