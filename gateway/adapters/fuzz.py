"""``anju bench fuzz-gbt26875``: the GB/T 26875.3 codec fuzzed for ``ANJU_FUZZ_MINUTES``
minutes (default 2; ``--quick``: 2 seconds). See ``gateway.adapters.bench.fuzz``."""

from __future__ import annotations

from typing import Any

from gateway.adapters.bench import run_fuzz


def run(quick: bool = False) -> dict[str, Any]:
    return run_fuzz(quick)
