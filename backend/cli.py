"""``anju backend ...``, ``anju db ...`` and ``anju alerts ...`` sub-commands (only argparse
at import time)."""

from __future__ import annotations

import argparse
from typing import Any

from anju.errors import AnjuError


def cmd_run(args: argparse.Namespace) -> int:
    from backend.config import BackendSettings
    from backend.service import run_backend

    overrides = {
        k: v
        for k, v in {
            "database_url": args.db,
            "mqtt_url": args.mqtt,
            "registry": args.registry,
            "api_host": args.api_host,
            "api_port": args.api_port,
            "api_token": args.api_token,
        }.items()
        if v is not None
    }
    try:
        settings = BackendSettings(**overrides)
    except ValueError as exc:
        raise AnjuError(f"backend settings: {exc}") from exc
    run_backend(settings)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    import psycopg

    from backend.db.migrate import migrate, parse_storage

    try:
        applied = migrate(args.db, prefer=parse_storage(args.storage))
    except psycopg.OperationalError as exc:
        raise AnjuError(f"cannot reach the database: {str(exc).strip()}") from exc
    print(f"applied: {', '.join(applied)}" if applied else "the schema is up to date")
    return 0


def cmd_verify_audit(args: argparse.Namespace) -> int:
    """Recompute the alert audit log's hash chain; exit 1 naming the first entry that breaks."""
    import psycopg

    from backend.store import AUDIT_CHAIN_QUERY, check_chain

    try:
        with psycopg.connect(args.db) as conn, conn.cursor(name="audit_chain") as cur:
            cur.execute(AUDIT_CHAIN_QUERY)
            report = check_chain(cur)
    except psycopg.OperationalError as exc:
        raise AnjuError(f"cannot reach the database: {str(exc).strip()}") from exc
    if report.ok:
        print(f"audit chain ok: {report.entries} entries")
        return 0
    print(
        f"audit chain BROKEN at entry {report.first_bad}: {report.reason}"
        f" (checked {report.entries} entries)"
    )
    return 1


def register(sub: Any) -> None:
    b = sub.add_parser("backend", help="the backend service").add_subparsers(
        dest="sub", required=True
    )
    br = b.add_parser("run", help="run the backend (settings also from ANJU_* variables)")
    br.add_argument("--db")
    br.add_argument("--mqtt")
    br.add_argument("--registry")
    br.add_argument("--api-host")
    br.add_argument("--api-port", type=int)
    br.add_argument("--api-token")
    br.set_defaults(func=cmd_run)

    db = sub.add_parser("db", help="database").add_subparsers(dest="sub", required=True)
    dm = db.add_parser("migrate", help="apply schema migrations")
    dm.add_argument("--db", required=True)
    dm.add_argument(
        "--storage",
        choices=("auto", "timescale", "plain"),
        default="auto",
        help="storage mode for a new database (kept after): TimescaleDB when this role can"
        " have it (auto), or insist on one",
    )
    dm.set_defaults(func=cmd_migrate)

    al = sub.add_parser("alerts", help="the alerting core").add_subparsers(
        dest="sub", required=True
    )
    av = al.add_parser(
        "verify-audit",
        help="recompute the audit log's hash chain; exit 1 and name the first altered entry",
    )
    av.add_argument("--db", required=True, help="postgresql://user@host:port/database")
    av.set_defaults(func=cmd_verify_audit)
