"""``anju simulate`` (only argparse at import time)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from anju.errors import AnjuError


def cmd_simulate(args: argparse.Namespace) -> int:
    from anju.cli import stop_on_signals
    from anju.registry import load_registry
    from device_simulators import load_scenario, run_simulation

    lan: dict[str, str] = {}
    for item in args.lan:
        gw, sep, url = item.partition("=")
        if not sep:
            raise AnjuError(f"--lan {item!r}: expected GATEWAY_ID=mqtt://host:port")
        lan[gw] = url
    registry = load_registry(args.registry)
    scenario = load_scenario(Path(args.scenario)) if args.scenario else None
    summary = run_simulation(
        registry,
        lan,
        scenario=scenario,
        duration_s=args.duration,
        seed=args.seed,
        time_scale=args.time_scale,
        stop=stop_on_signals(),
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(summary, file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    s = sub.add_parser("simulate", help="simulated devices publishing to LAN brokers")
    s.add_argument("--registry", required=True)
    s.add_argument("--lan", action="append", default=[], help="GATEWAY_ID=mqtt://host:port")
    s.add_argument("--scenario")
    s.add_argument("--duration", type=float)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--time-scale", type=float, default=1.0)
    s.set_defaults(func=cmd_simulate)
