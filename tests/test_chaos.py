"""``anju chaos --profile short``: a whole city on loopback, provisioned as deployed (private
PostgreSQL and Mosquitto with passwords, ACLs and TLS, a backend, real gateway processes and
simulated gateways, the device simulators), every fault of the schedule once, and the verdict
from the outside must pass. Bounded: about two minutes of faults plus start and drain; it
stops by itself. ``anju bench storm --quick`` must count nothing lost and nothing stored twice.

A guarantee broken on purpose for real (``--break skip_dedupe``: the backend stores a resent
record again) must make the verdict fail, on the check that guards it; the other two breaks
are run by hand (docs/guarantees.md). The verdict's checks are also shown to fail on crafted
inputs in tests/test_chaos_verdict.py."""

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
    report = (tmp_path / "run" / "chaos-report.html").read_text(encoding="utf-8")
    assert report.count("<svg") == 2
    assert "<link" not in report and "src=" not in report  # no external assets
    saved = json.loads((tmp_path / "run" / "chaos-summary.json").read_text(encoding="utf-8"))
    assert saved["ok"] is True and saved["latency"]["all"]["n"] > 0


@pytest.mark.timeout(240)
def test_a_backend_that_skips_the_dedupe_fails_the_verdict(tmp_path: Path) -> None:
    """Backend workers killed while simulated gateways send (their records come again: from
    the worker's broker session and from the gateways' resends); with the dedupe skipped on
    purpose they are stored twice, and the verdict says so."""
    summary = run_chaos(
        "short", 0.5, 3, workers=1, data=tmp_path / "run",
        breaks=("skip_dedupe",), faults=("backend_kill",),
    )  # fmt: skip
    assert not summary["ok"]
    checks = {c["name"]: c for c in summary["checks"]}
    readings = checks["readings stored exactly once"]
    assert not readings["ok"] and summary["readings_duplicated"] > 0, readings
    assert summary["readings_lost"] == 0
    assert checks["no process left behind"]["ok"]


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
