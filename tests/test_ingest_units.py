"""Pure parts of the ingest path: sequence sets, gap tracking, rows for COPY."""

from __future__ import annotations

import itertools
import math

from hypothesis import given
from hypothesis import strategies as st

from anju.uplink import Record
from backend.db.rows import HOUR_MS, build_rows, value_columns
from backend.db.seqset import GapTracker, SeqSet, runs

seqs = st.lists(st.integers(0, 300), max_size=80)


@given(st.lists(seqs, max_size=6))
def test_seqset_is_a_set_of_numbers(batches: list[list[int]]) -> None:
    s = SeqSet()
    model: set[int] = set()
    for batch in batches:
        added = 0
        for lo, hi in runs(batch):
            added += s.add_range(lo, hi)
        assert added == len(set(batch) - model)
        model |= set(batch)
        assert len(s) == len(model)
        assert all(x in s for x in model)
        assert not any(x in s for x in range(-2, 305) if x not in model)
        # disjoint, sorted, never adjacent (the canonical form of an int8multirange)
        r = s.ranges()
        assert all(a[1] < b[0] for a, b in itertools.pairwise(r))
        assert s.missing() == (max(model) - min(model) + 1 - len(model) if model else 0)


@given(seqs)
def test_runs(batch: list[int]) -> None:
    out = runs(batch)
    assert [x for lo, hi in out for x in range(lo, hi)] == sorted(set(batch))


def test_gap_tracker_counts_holes_and_their_filling() -> None:
    g = GapTracker()
    assert g.add("gw", "b1", [1, 2, 3]) == 0
    assert g.add("gw", "b1", [7]) == 1  # 4..6 missing (an event overtaking telemetry, say)
    assert g.total_missing == 3
    assert g.add("gw", "b1", [4, 5, 6]) == 0
    assert g.total_missing == 0
    assert g.add("gw", "b2", [100, 102]) == 1  # a new boot starts where it starts; 101 missing
    assert g.total_missing == 1


def test_gap_tracker_is_bounded() -> None:
    g = GapTracker(max_keys=2)
    g.add("a", "1", [1, 3])
    g.add("b", "1", [1])
    g.add("c", "1", [1])
    assert g.total_missing == 0  # "a" (one missing) was forgotten


def _rec(seq: int, kind: str = "t", ts: int = 1_700_000_000_000, **kw: object) -> Record:
    return Record(
        gateway_id="gw", boot_id="b", seq=seq, device_id="d1", kind=kind, ts=ts, rx=ts, **kw
    )  # type: ignore[arg-type]


def test_value_columns() -> None:
    assert value_columns(True) == (None, None, True)
    assert value_columns(3) == (3.0, None, None)
    assert value_columns("up\x00") == (None, "up\ufffd", None)
    assert value_columns(10**400) == (None, str(10**400), None)
    assert value_columns([1, 2]) == (None, "[1, 2]", None)
    num, _, _ = value_columns(float("nan"))
    assert num is not None and math.isnan(num)


def test_build_rows_splits_kinds_and_rejects_impossible_times() -> None:
    recs = [
        _rec(1, metrics={"floor": 3, "door": "open", "moving": False}),
        _rec(2, kind="e", event_type="alarm", data={"zone": 1}),
        _rec(3, kind="s", status={"online": True, "fw": "1.0"}),
        _rec(4, ts=10**17, metrics={"floor": 1}),
    ]
    rows = build_rows(recs, dirty_before_ms=1_700_000_000_001)
    assert [r.seq for r in rows.stored] == [1, 2, 3]
    assert [r.seq for r in rows.rejected] == [4]
    assert len(rows.readings) == 3
    assert rows.pairs == {("d1", "floor"), ("d1", "door"), ("d1", "moving")}
    assert rows.events[0][2:4] == ("alarm", '{"zone": 1}')
    assert rows.statuses[0][:3] == ("d1", True, "1.0")
    assert rows.newest_ms == 1_700_000_000_000
    assert rows.dirty == {(1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS, "d1")}
    assert build_rows(recs[:1], dirty_before_ms=None).dirty == set()
