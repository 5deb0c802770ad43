"""``anju chaos --profile short``: a whole city on loopback, provisioned as deployed (private
PostgreSQL and Mosquitto with passwords, ACLs and TLS, a backend, real gateway processes and
simulated gateways, the device simulators), every fault of the schedule once, and the verdict
from the outside must pass. Bounded: about 75 s of packed faults plus start and drain; it
stops by itself. ``anju bench storm --quick`` must count nothing lost and nothing stored twice.

The breaks (``--break NAME``) are run by hand (docs/guarantees.md): ``--break skip_dedupe
--faults backend_kill_after_commit`` fails for certain, but the pair (broken, restored) costs
about two minutes. What it shows is tested here all the same: the short profile includes
``backend_kill_after_commit`` (a committed record sent again, dropped), and
tests/test_exit_after_commit.py stores the resend twice with the dedupe skipped. The knobs are
tested in tests/test_break_guarantees.py, and the verdict's checks are shown to fail on
crafted inputs in tests/test_chaos_verdict.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anju.chaos.run import KINDS, run_chaos
from anju.chaos.storm import run as storm

pytestmark = pytest.mark.integration


@pytest.mark.timeout(420)
def test_short_profile_passes_its_verdict(tmp_path: Path) -> None:
    summary = run_chaos("short", None, 3, workers=1, data=tmp_path / "run")
    failed = [c for c in summary["checks"] if not c["ok"]]
    assert not failed, json.dumps(summary, indent=1)
    assert {f["kind"] for f in summary["faults"]} >= set(KINDS)
    assert summary["secure"] is True
    assert summary["readings_acknowledged"] > 500 and summary["alarms"] >= 10
    # The packed short profile still raises alarms in calm (the on-time check's inputs), and
    # alarms during the replay storm (its check's).
    assert summary["latency"]["calm"]["n"] > 0 and summary["latency"]["replay_storm"]["n"] > 0
    report = (tmp_path / "run" / "chaos-report.html").read_text(encoding="utf-8")
    assert report.count("<svg") == 2
    assert "<link" not in report and "src=" not in report  # no external assets
    saved = json.loads((tmp_path / "run" / "chaos-summary.json").read_text(encoding="utf-8"))
    assert saved["ok"] is True and saved["latency"]["all"]["n"] > 0


@pytest.mark.timeout(180)
def test_storm_bench_quick_loses_and_duplicates_nothing() -> None:
    figures = storm(quick=True)
    for key in (
        "gateways",
        "backlog_readings",
        "drain_s",
        "ingest_readings_per_s",
        "alarm_p50_ms",
        "alarm_p99_ms",
        "alarm_max_ms",
        "lost",
        "duplicates",
    ):
        assert key in figures
    assert (figures["lost"], figures["duplicates"]) == (0, 0)
    assert figures["backlog_readings"] == figures["gateways"] * 200
    assert figures["alarms_not_received"] == 0
