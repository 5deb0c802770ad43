"""``anju bench NAME``: benchmarks that print a table, or one JSON object with ``--json``.

Benchmarks live in the ``benches`` package, apart from the runtime code (a bench imports
``backend``, ``gateway`` or ``device_simulators``, never the reverse); the replay storm is
``anju.chaos.storm``, part of the chaos harness whose city it uses. Each exposes
``run(quick: bool) -> dict`` (or the function named after ``:`` in its entry); the dict's keys
are the figures (numbers, or an object of numbers). ``quick`` runs a small version that checks
the benchmark works (the tests use it); figures come from full runs only.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import platform
from collections.abc import Callable
from typing import Any, Final

BENCHES: Final = {
    "gateway": ("benches.gateway", "gateway throughput, replay and memory (issue 3)"),
    "ingest": ("benches.ingest", "end-to-end ingest and queries (issue 4)"),
    "alerts": ("benches.alerts", "alert latency under load, rule throughput (issue 5)"),
    "simulate": ("benches.simulate", "simulated devices per core (issue 6)"),
    "adapters": ("benches.adapters", "GB/T 26875.3 frames and Modbus polls (issue 12)"),
    "fuzz-gbt26875": ("benches.adapters:run_fuzz", "GB/T 26875.3 codec fuzz, ANJU_FUZZ_MINUTES"),
    "storm": ("anju.chaos.storm", "replay storm: N gateways return with backlogs (issue 16)"),
    "comeback": ("benches.comeback", "alarms after an outage: broker and worker back (16.4)"),
    "supervision": ("benches.supervision", "supervision figures on a city's year (issue 15)"),
    "screen": (
        "benches.screen",
        "control-room page: 1,000 alerts, 300 communities (issue 14)",
    ),
}


def available() -> dict[str, str]:
    """Benchmarks whose module exists, with their descriptions."""
    out = {}
    for name, (entry, desc) in BENCHES.items():
        module = entry.partition(":")[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            out[name] = desc
    return out


def load(name: str) -> Callable[..., dict[str, Any]]:
    module, _, attr = BENCHES[name][0].partition(":")
    fn: Callable[..., dict[str, Any]] = getattr(importlib.import_module(module), attr or "run")
    return fn


def table(name: str, figures: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    for key, value in figures.items():
        if isinstance(value, dict):
            for k, v in value.items():
                rows.append((f"{key}.{k}", _fmt(v)))
        else:
            rows.append((key, _fmt(value)))
    width = max((len(k) for k, _ in rows), default=10)
    head = f"anju bench {name}  ({platform.node()}, Python {platform.python_version()})"
    lines = [head, "-" * len(head)]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return json.dumps(v) if not isinstance(v, str) else v
