"""The ``anju`` command line.

Each package registers its own sub-commands (``gateway.cli``, ``backend.cli``,
``device_simulators.cli``) and imports its dependencies only when a command runs, so that
``anju gateway`` works on a Raspberry Pi without the backend's dependencies.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from anju.errors import AnjuError


def _logging(level: str) -> None:
    """Log lines on stderr, their times in the deployment's zone (``ANJU_TIMEZONE``)."""
    from anju.localtime import LocalFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LocalFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for the thread-based commands."""
    stop = threading.Event()

    def handler(_sig: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def cmd_demo(args: argparse.Namespace) -> int:
    from anju.demo import DemoOptions, run_demo

    return run_demo(
        DemoOptions(
            data_dir=Path(args.data_dir),
            registry=Path(args.registry) if args.registry else None,
            scenario=Path(args.scenario) if args.scenario else None,
            simulators=not args.no_simulators,
            duration_s=args.duration,
            db_url=args.db,
            time_scale=args.time_scale,
            history_days=args.history,
            insecure=args.insecure,
            fresh=args.fresh,
            workers=args.workers,
        )
    )


def cmd_registry_check(args: argparse.Namespace) -> int:
    from anju.registry import CityIndex, load_registry

    city = CityIndex(load_registry(args.file))
    print(
        f"{args.file}: ok: {len(city.communities)} communities, "
        f"{len(city.gateway_community)} gateways, {len(city.devices)} devices"
    )
    return 0


def cmd_registry_acl(args: argparse.Namespace) -> int:
    from anju.acl import write_broker_files
    from anju.registry import load_registry

    files = write_broker_files(load_registry(args.file), Path(args.out))
    for f in files:
        print(f)
    print(
        "Hash the passwords in place before use: mosquitto_passwd -U FILE.passwd "
        "(keep a copy of the clear-text passwords for the gateways and subscribers first).",
        file=sys.stderr,
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from anju import bench

    names = bench.available()
    if args.name not in names:
        known = ", ".join(names) or "none yet"
        raise AnjuError(f"no benchmark called {args.name!r}; available: {known}")
    kwargs: dict[str, Any] = {"db": args.db} if args.db else {}  # where a database matters
    if args.workers is not None:  # backend workers (issue 11): ingest and alerts
        kwargs["workers"] = args.workers
    if args.shared:  # ... every one active on its partitions (alerts)
        if args.name != "alerts":
            raise AnjuError("--shared applies to `anju bench alerts` (with --workers N)")
        kwargs["shared"] = True
    try:
        figures = bench.load(args.name)(quick=args.quick, **kwargs)
    except TypeError as exc:
        bad = next((k for k in kwargs if k in str(exc)), None)
        if bad is None:
            raise
        raise AnjuError(f"the {args.name} benchmark does not take --{bad}") from exc
    print(json.dumps(figures) if args.json else bench.table(args.name, figures))
    return 0


def cmd_fuzz(args: argparse.Namespace) -> int:
    try:
        from anju import fuzz
    except ImportError as exc:
        raise AnjuError(f"{exc.name} is not installed: pip install 'anju[dev]'") from exc
    if args.name not in fuzz.TARGETS:
        known = ", ".join(fuzz.TARGETS)
        raise AnjuError(f"no fuzz target called {args.name!r}; available: {known}")
    figures = fuzz.run(args.name, minutes=args.minutes, db_url=args.db)
    print(
        json.dumps(
            {
                "target": args.name,
                "examples": figures.examples,
                "failures": figures.failures,
                "seconds": figures.seconds,
                "failed": figures.failed,
            },
            ensure_ascii=False,
        )
    )
    return 1 if figures.failures else 0


def build_parser() -> argparse.ArgumentParser:
    import backend.cli
    import device_simulators.cli
    import gateway.cli

    p = argparse.ArgumentParser(
        prog="anju", description="安居 anju: community IoT gateway and backend"
    )
    p.add_argument("--log-level", default="INFO")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run a sample Jiaxing city end to end on this machine")
    d.add_argument("--data-dir", default="anju-data", help="where servers keep data (kept)")
    d.add_argument("--registry", help="registry YAML (default: the sample Jiaxing city)")
    d.add_argument("--scenario", help="scenario YAML (default: trapped passengers and a fire)")
    d.add_argument("--no-simulators", action="store_true", help="start no simulated devices")
    d.add_argument("--duration", type=float, help="stop after this many seconds")
    d.add_argument("--db", help="use this PostgreSQL instead of a private one")
    d.add_argument(
        "--time-scale", type=float, default=1.0, help="simulated device time runs this much faster"
    )
    d.add_argument(
        "--history", type=int, default=0, metavar="DAYS", help="first fill the database with "
        "DAYS days of a generated past for the supervision pages (once per database)"
    )  # fmt: skip
    d.add_argument(
        "--insecure", action="store_true", help="the old demo: anonymous brokers in clear text "
        "and an API without tokens (default: provisioned credentials, TLS, an admin token)"
    )  # fmt: skip
    d.add_argument(
        "--fresh", action="store_true", help="start from an empty data folder (deletes it first)"
    )
    d.add_argument(
        "--workers", type=int, default=1, help="backend workers: one leads, the others stand by"
    )
    d.set_defaults(func=cmd_demo)

    gateway.cli.register(sub)
    backend.cli.register(sub)
    __import__("anju.provision.cli", fromlist=["register"]).register(sub)
    device_simulators.cli.register(sub)
    __import__("anju.chaos.cli", fromlist=["register"]).register(sub)

    from anju.bench import BENCHES

    bn = sub.add_parser(
        "bench",
        help="benchmarks: " + ", ".join(BENCHES),
        epilog="benchmarks:\n" + "\n".join(f"  {n:<14} {d}" for n, (_, d) in BENCHES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bn.add_argument("name", help="one of the benchmarks below")
    bn.add_argument("--json", action="store_true", help="print one JSON object")
    bn.add_argument("--quick", action="store_true", help="a small run that checks it works")
    bn.add_argument("--db", help="measure this PostgreSQL database instead of a private server")
    bn.add_argument("--workers", type=int, help="backend workers (ingest, alerts)")
    bn.add_argument(
        "--shared",
        action="store_true",
        help="alerts: the workers all active, each on its partitions (docs/scaling.md)",
    )
    bn.set_defaults(func=cmd_bench)

    fz = sub.add_parser("fuzz", help="property-based fuzzing of a boundary for N minutes")
    fz.add_argument("name", help="uplink, ingest, rules (and others registered in anju/fuzz.py)")
    fz.add_argument("--minutes", type=float, default=2.0)
    fz.add_argument("--db", help="PostgreSQL to use (default: a private one, removed after)")
    fz.set_defaults(func=cmd_fuzz)

    r = sub.add_parser("registry", help="registries").add_subparsers(dest="sub", required=True)
    rc = r.add_parser("check", help="validate a registry file")
    rc.add_argument("file")
    rc.set_defaults(func=cmd_registry_check)
    ra = r.add_parser("acl", help="Mosquitto ACL and password files for every broker")
    ra.add_argument("file")
    ra.add_argument("--out", required=True, help="folder for the .acl and .passwd files")
    ra.set_defaults(func=cmd_registry_acl)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _logging(args.log_level)
    try:
        rc: int = args.func(args)
        return rc
    except AnjuError as exc:
        print(f"anju: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(
            f"anju: error: {exc.name or exc} is not installed; this command needs the backend "
            "extras: pip install 'anju[backend]'",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130
