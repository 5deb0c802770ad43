"""``anju supervision ...``: check a rule set, publish a month (only argparse at import)."""

from __future__ import annotations

import argparse
from typing import Any

from anju.errors import AnjuError


def cmd_check_rules(args: argparse.Namespace) -> int:
    from pathlib import Path

    from backend.supervision.ruleset import load_rules

    loaded = load_rules(Path(args.file) if args.file else None)
    r = loaded.rules
    print(
        f"{loaded.source}: ok: version {r.version}, {len(r.lines)} lines, "
        f"{len(r.grades)} grades, {len(r.scorecard)} scorecard titles; sha256 {loaded.sha256}"
    )
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    import asyncio
    from datetime import UTC, datetime, timedelta, timezone
    from pathlib import Path

    import psycopg

    from anju.registry import CityIndex, load_registry
    from backend.supervision.credit import publish
    from backend.supervision.rollup import refresh, sync_registry
    from backend.supervision.ruleset import load_rules

    try:
        month = datetime.strptime(args.month, "%Y-%m").date()
    except ValueError:
        raise AnjuError(f"--month: expected YYYY-MM, got {args.month!r}") from None
    loaded = load_rules(Path(args.rules) if args.rules else None)
    city = CityIndex(load_registry(args.registry))
    today = datetime.now(UTC).astimezone(timezone(timedelta(hours=8))).date()

    async def run() -> int:
        async with await psycopg.AsyncConnection.connect(args.db, autocommit=True) as conn:
            await sync_registry(conn, city, today=today)
            await refresh(conn)
            return len(await publish(conn, month, loaded, by=args.by))

    try:
        n = asyncio.run(run())
    except psycopg.OperationalError as exc:
        raise AnjuError(f"cannot reach the database: {str(exc).strip()}") from exc
    print(f"published {args.month}: {n} companies with rule set {loaded.rules.version}")
    return 0


def register(sub: Any) -> None:
    sv = sub.add_parser("supervision", help="supervision: rule sets, publishing").add_subparsers(
        dest="sub", required=True
    )
    ck = sv.add_parser("check-rules", help="validate a credit rule set (default: the shipped one)")
    ck.add_argument("file", nargs="?")
    ck.set_defaults(func=cmd_check_rules)
    pb = sv.add_parser("publish", help="publish a month's credit results")
    pb.add_argument("--db", required=True, help="postgresql://user@host:port/database")
    pb.add_argument("--registry", required=True)
    pb.add_argument("--month", required=True, help="YYYY-MM (local, Asia/Shanghai)")
    pb.add_argument("--rules", help="rule set YAML (default: the shipped default)")
    pb.add_argument("--by", default="anju supervision publish", help="who publishes")
    pb.set_defaults(func=cmd_publish)
