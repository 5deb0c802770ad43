"""``anju backend ...``, ``anju db ...`` and ``anju alerts ...`` sub-commands (only argparse
at import time)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from anju.errors import AnjuError
from backend.supervision import cli as supervision_cli


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
            "audit_anchor_file": args.audit_anchor_file,
            "client_id": args.client_id,
            "worker_group": args.group,
            "shared": True if args.shared else None,
            "partitions": args.partitions,
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
    """Verify the alert audit log (``backend.audit``): every entry against its hash rule and
    its link, every alert row against its last entry, the chain against the anchors; exit 1
    listing every problem."""
    import json
    import os

    import psycopg

    from backend.audit import verify
    from backend.audit_anchor import read_anchors

    paths: list[Path] = args.anchors or []
    if not paths and os.environ.get("ANJU_AUDIT_ANCHOR_FILE"):
        paths = [Path(os.environ["ANJU_AUDIT_ANCHOR_FILE"])]
    anchors = [a for p in paths for a in read_anchors(p)]  # before the database's snapshot
    try:
        with psycopg.connect(args.db) as conn:
            report = verify(conn, anchors)
    except psycopg.OperationalError as exc:
        raise AnjuError(f"cannot reach the database: {str(exc).strip()}") from exc
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
        raise AnjuError(
            f"the schema is older than the audit chain's (migration 0006): run"
            f" `anju db migrate --db URL` first ({str(exc).strip().splitlines()[0]})"
        ) from exc
    if args.json:
        print(json.dumps(report.to_json()))
        return 0 if report.ok else 1
    against = f"{report.anchors} anchors" if paths else "no anchors (a cut tail goes unseen)"
    if report.ok:
        print(f"audit chain ok: {report.entries} entries up to n={report.head}, against {against}")
        return 0
    k = len(report.problems)
    print(
        f"audit chain BROKEN: {k} problem{'' if k == 1 else 's'} in {report.entries} entries"
        f" up to n={report.head}, against {against}"
    )
    for p in report.problems:
        where = "no entry" if p.n is None else f"entry {p.n}"
        print(f"  {where}: {p.reason}")
    return 1


def cmd_dead_letters(args: argparse.Namespace) -> int:
    """List the uplink's dead letters (``backend.deadletters``), newest first."""
    import json

    import psycopg

    from backend.deadletters import as_json, listing_query

    q, params = listing_query(gateway_id=args.gateway, reason=args.reason, limit=args.limit)
    try:
        with psycopg.connect(args.db) as conn:
            rows = [as_json(r) for r in conn.execute(q.encode(), params).fetchall()]
    except psycopg.OperationalError as exc:
        raise AnjuError(f"cannot reach the database: {str(exc).strip()}") from exc
    except psycopg.errors.UndefinedTable as exc:
        raise AnjuError("no dead_letters table: run `anju db migrate --db URL` first") from exc
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
        return 0
    if not rows:
        print("no dead letters")
        return 0
    for r in rows:
        seq = "-" if r["seq"] is None else r["seq"]
        where = f"{r['gateway_id'] or '?'}/{r['boot_id'] or '-'}/{seq}"
        acked = "confirmed" if r["seq"] is not None else "not confirmed"
        print(
            f"{r['last_at']}  {r['reason']:<16} {where}  x{r['count']}  ({acked})"
            f"  {r['device_id'] or ''}  {r['detail'][:100]}"
        )
    return 0


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
    br.add_argument("--audit-anchor-file", type=Path, help="append the audit chain's head here")
    br.add_argument("--client-id", help="this worker's MQTT client id (its broker user)")
    br.add_argument(
        "--group", help="several workers: the group's name (docs/scaling.md); one leads"
    )
    br.add_argument(
        "--shared",
        action="store_true",
        help="with --group: every worker active, each evaluating its partitions of the city"
        " (each with its own --client-id); without: one leads, the others stand by",
    )
    br.add_argument(
        "--partitions", type=int, help="with --shared: partitions of the city (default 16)"
    )
    br.set_defaults(func=cmd_run)
    bd = b.add_parser(
        "dead-letters", help="uplink input the backend rejected (newest first), with reasons"
    )
    bd.add_argument("--db", required=True, help="postgresql://user@host:port/database")
    bd.add_argument("--gateway", help="only this gateway's")
    bd.add_argument("--reason", help="only this reason (e.g. too_deep, foreign_device)")
    bd.add_argument("--limit", type=int, default=50)
    bd.add_argument("--json", action="store_true", help="print one JSON array")
    bd.set_defaults(func=cmd_dead_letters)

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
        help="verify the audit log's hash chain and alerts against it and its anchors;"
        " exit 1 listing every problem",
    )
    av.add_argument("--db", required=True, help="postgresql://user@host:port/database")
    av.add_argument(
        "--anchors",
        type=Path,
        action="append",
        help="an anchor file (the backend's, or a witness's copies of anju/audit/head), one"
        " JSON object a line; repeatable; default $ANJU_AUDIT_ANCHOR_FILE",
    )
    av.add_argument("--json", action="store_true", help="print the report as one JSON object")
    av.set_defaults(func=cmd_verify_audit)

    supervision_cli.register(sub)  # issue 15
