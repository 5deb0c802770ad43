"""The alerting core is pure: importing any of its modules pulls in nothing that does I/O
(issue 11). The boundary where it meets storage and delivery is ``backend.desk``."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import backend.alerting

# What the core must never import (directly or through another module).
IO_MODULES = (
    "psycopg",
    "psycopg_pool",
    "aiomqtt",
    "paho",
    "httpx",
    "backend.db",
    "backend.store",
    "backend.delivery",
    "backend.webhooks",
    "backend.ingest",
    "backend.alarm",
    "backend.service",
    "backend.desk",
)


def core_modules() -> list[str]:
    return sorted(
        f"backend.alerting.{m.name}"
        for m in pkgutil.iter_modules(backend.alerting.__path__)
        if not m.name.startswith("bench")  # (benchmarks live apart: benches/)
    )


def test_the_alerting_core_imports_no_io() -> None:
    modules = core_modules()
    assert "backend.alerting.engine" in modules and "backend.alerting.testing" in modules
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = json.loads(out.stdout)
    leaks = sorted(
        name for name in loaded for io in IO_MODULES if name == io or name.startswith(io + ".")
    )
    assert leaks == []


def test_the_desk_is_where_the_core_meets_io() -> None:
    """The boundary imports the core and storage; the store imports the core's model only."""
    code = "import json, sys\nimport backend.store\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = set(json.loads(out.stdout))
    assert "backend.alerting.lifecycle" in loaded
    assert "backend.desk" not in loaded and "backend.delivery" not in loaded
