"""``anju bench screen`` runs (quick: 100 alerts, 30 communities) and reports its figures."""

from __future__ import annotations

from benches.screen import run
from tests.browser_support import chromium_executable


def test_screen_bench_quick_reports_its_figures() -> None:
    chromium_executable()  # fails saying how to install Chromium when it is missing
    figures = run(quick=True)
    assert (figures["alerts"], figures["communities"]) == (100, 30)
    assert figures["render_ms"] > 0 and figures["communities_render_ms"] > 0
    assert set(figures["input_latency_ms"]) == {"p50", "max", "presses"}
    assert figures["input_latency_ms"]["presses"] == 5
    assert figures["tick_ms"] >= 0 and figures["burst_ms"] > 0
