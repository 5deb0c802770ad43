"""``anju chaos``: argparse only at import time (docs/guarantees.md)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any


def cmd_chaos(args: argparse.Namespace) -> int:
    from anju.chaos.run import run_chaos, table

    data = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="anju-chaos-"))
    if args.data_dir and data.exists() and any(data.iterdir()):
        from anju.errors import AnjuError

        raise AnjuError(f"--data-dir {data} is not empty: a chaos run starts from nothing")
    summary = run_chaos(args.profile, args.minutes, args.seed, args.workers, data)
    print(json.dumps(summary) if args.json else table(summary))
    print(f"report: {data / 'chaos-report.html'}; summary: {data / 'chaos-summary.json'}")
    return 0 if summary["ok"] else 1


def register(sub: Any) -> None:
    c = sub.add_parser(
        "chaos", help="a city under fire: faults on a seeded schedule and a verdict (issue 16)"
    )
    c.add_argument("--profile", choices=("short", "long"), default="short")
    c.add_argument("--minutes", type=float, default=None, help="override the profile's length")
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--workers", type=int, default=1, help="backend workers (one until issue 11)")
    c.add_argument("--data-dir", default=None, help="empty folder for the run (default: a temp)")
    c.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    c.set_defaults(func=cmd_chaos)
