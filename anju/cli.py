"""The ``anju`` command line.

Each sub-command imports only what it needs, so that ``anju gateway`` runs on a Raspberry Pi
without the backend's dependencies.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from anju.errors import AnjuError


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _stop_on_signals() -> threading.Event:
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
        )
    )


def cmd_backend_run(args: argparse.Namespace) -> int:
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


def cmd_gateway_run(args: argparse.Namespace) -> int:
    from gateway import Gateway, load_gateway_config

    cfg = load_gateway_config(Path(args.config))
    stop = _stop_on_signals()
    Gateway(cfg).run(stop)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
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
    stop = _stop_on_signals()
    summary = run_simulation(
        registry,
        lan,
        scenario=scenario,
        duration_s=args.duration,
        seed=args.seed,
        time_scale=args.time_scale,
        stop=stop,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(summary, file=sys.stderr)
    return 0


def cmd_db_migrate(args: argparse.Namespace) -> int:
    from backend.db.migrate import migrate

    applied = migrate(args.db)
    print(f"applied: {', '.join(applied)}" if applied else "the schema is up to date")
    return 0


def cmd_registry_check(args: argparse.Namespace) -> int:
    from anju.registry import CityIndex, load_registry

    city = CityIndex(load_registry(args.file))
    print(
        f"{args.file}: ok: {len(city.communities)} communities, "
        f"{len(city.gateway_community)} gateways, {len(city.devices)} devices"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
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
    d.set_defaults(func=cmd_demo)

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
    br.set_defaults(func=cmd_backend_run)

    g = sub.add_parser("gateway", help="the community gateway").add_subparsers(
        dest="sub", required=True
    )
    gr = g.add_parser("run", help="run a gateway")
    gr.add_argument("--config", required=True, help="gateway YAML")
    gr.set_defaults(func=cmd_gateway_run)

    s = sub.add_parser("simulate", help="simulated devices publishing to LAN brokers")
    s.add_argument("--registry", required=True)
    s.add_argument("--lan", action="append", default=[], help="GATEWAY_ID=mqtt://host:port")
    s.add_argument("--scenario")
    s.add_argument("--duration", type=float)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--time-scale", type=float, default=1.0)
    s.set_defaults(func=cmd_simulate)

    db = sub.add_parser("db", help="database").add_subparsers(dest="sub", required=True)
    dm = db.add_parser("migrate", help="apply schema migrations")
    dm.add_argument("--db", required=True)
    dm.set_defaults(func=cmd_db_migrate)

    r = sub.add_parser("registry", help="registries").add_subparsers(dest="sub", required=True)
    rc = r.add_parser("check", help="validate a registry file")
    rc.add_argument("file")
    rc.set_defaults(func=cmd_registry_check)
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
