"""``anju chaos``: argparse only at import time (docs/guarantees.md)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any


def cmd_chaos(args: argparse.Namespace) -> int:
    import signal

    from anju.chaos.run import run_chaos, table

    def on_term(_s: int, _f: object) -> None:
        raise KeyboardInterrupt  # the run's own cleanup stops everything it started

    signal.signal(signal.SIGTERM, on_term)

    data = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="anju-chaos-"))
    if args.data_dir and data.exists() and any(data.iterdir()):
        from anju.errors import AnjuError

        raise AnjuError(f"--data-dir {data} is not empty: a chaos run starts from nothing")

    def names(text: str | None) -> tuple[str, ...]:
        return tuple(x.strip() for x in (text or "").split(",") if x.strip())

    summary = run_chaos(
        args.profile, args.minutes, args.seed, args.workers, data,
        Path(args.report) if args.report else None,
        insecure=args.insecure, breaks=names(args.break_), faults=names(args.faults),
    )  # fmt: skip
    print(json.dumps(summary) if args.json else table(summary))
    out = Path(args.report) if args.report else data
    print(f"report: {out / 'chaos-report.html'}; summary: {out / 'chaos-summary.json'}")
    return 0 if summary["ok"] else 1


def register(sub: Any) -> None:
    c = sub.add_parser(
        "chaos", help="a city under fire: faults on a seeded schedule and a verdict (issue 16)"
    )
    c.add_argument("--profile", choices=("short", "storm", "long"), default="short")
    c.add_argument("--minutes", type=float, default=None, help="override the profile's length")
    c.add_argument("--seed", type=int, default=1)
    c.add_argument(
        "--workers", type=int, default=1, help="backend workers: one leads, the others stand by"
    )
    c.add_argument("--data-dir", default=None, help="empty folder for the run (default: a temp)")
    c.add_argument("--report", default=None, help="folder for the report and the summary")
    c.add_argument("--insecure", action="store_true", help="anonymous, clear-text brokers")
    c.add_argument(
        "--faults",
        default=None,
        metavar="KIND,...",
        help="only these faults (default: every kind): broker_restart, db_restart, backend_kill,"
        " backend_kill_db_down, backend_kill_after_commit (the backend exits after a commit,"
        " before its acknowledgement: a resend of a committed reading for certain), gateway_kill,"
        " gateway_powercut, uplink_cut, clock_jump, poison",
    )
    c.add_argument(
        "--break",
        dest="break_",
        default=None,
        metavar="NAME,...",
        help="TEST ONLY: a guarantee every backend worker breaks on purpose (ANJU_BREAK: "
        "ack_before_commit, skip_dedupe, no_event_priority); the verdict must fail (skip_dedupe"
        " for certain with --faults backend_kill_after_commit)",
    )
    c.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    c.set_defaults(func=cmd_chaos)
