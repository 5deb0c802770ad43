"""``anju simulate`` and ``anju simulate generate-registry`` (only argparse at import time).

``anju simulate --registry city.yaml --lan GW=mqtt://... [--all-gateways mqtt://host:port]``
drives the devices of the named gateways (or of every gateway of the registry, all on one
broker) with a progress line every few seconds and a summary at the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from anju.errors import AnjuError


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_simulate(args: argparse.Namespace) -> int:
    from anju.cli import stop_on_signals
    from anju.registry import load_registry
    from device_simulators import Behaviour, Timing, load_scenario, run_simulation

    if not args.registry:
        raise AnjuError("anju simulate: --registry FILE is required")
    registry = load_registry(args.registry)
    lan: dict[str, str] = {}
    if args.all_gateways:
        lan = {gw.id: args.all_gateways for c in registry.communities for gw in c.gateways}
    for item in args.lan:
        gw, sep, url = item.partition("=")
        if not sep:
            raise AnjuError(f"--lan {item!r}: expected GATEWAY_ID=mqtt://host:port")
        lan[gw] = url
    if not lan:
        raise AnjuError("anju simulate: name the gateways with --lan GW=URL or --all-gateways URL")
    scenario = load_scenario(Path(args.scenario), registry=registry) if args.scenario else None
    timing = Timing(
        elevator_moving_s=args.elevator_moving_interval,
        elevator_idle_s=args.elevator_idle_interval,
        other_s=args.interval,
    )
    behaviour = Behaviour(
        false_alarms_per_year=args.false_alarms_per_year,
        camera_events_per_hour=args.camera_events_per_hour,
        traffic=args.traffic,
    )
    summary = run_simulation(
        registry,
        lan,
        scenario=scenario,
        duration_s=args.duration,
        seed=args.seed,
        time_scale=args.time_scale,
        stop=stop_on_signals(),
        log=_say,
        timing=timing,
        behaviour=behaviour,
        progress_every_s=args.progress_every,
    )
    _say(summary.describe())
    return 0


def cmd_generate_registry(args: argparse.Namespace) -> int:
    from device_simulators.registrygen import CityPlan, write_registry

    plan = CityPlan(
        communities=args.communities,
        seed=args.seed,
        buildings_min=args.buildings_min,
        buildings_max=args.buildings_max,
        smoke_per_building=args.smoke_per_building,
        districts=tuple(args.district),
    )
    try:
        registry = write_registry(plan, Path(args.out))
    except ValueError as exc:
        raise AnjuError(f"anju simulate generate-registry: {exc}") from exc
    devices = sum(len(c.devices) for c in registry.communities)
    kinds: dict[str, int] = {}
    for com in registry.communities:
        for dev in com.devices:
            kinds[dev.kind] = kinds.get(dev.kind, 0) + 1
    _say(
        f"{args.out}: {len(registry.communities)} communities in "
        f"{len(registry.districts)} districts, {devices} devices ("
        + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        + ")"
    )
    return 0


def register(sub: Any) -> None:
    s = sub.add_parser("simulate", help="simulated devices publishing to LAN brokers")
    s.add_argument("--registry", help="registry YAML (PROTOCOL.md section 3)")
    s.add_argument("--lan", action="append", default=[], help="GATEWAY_ID=mqtt://host:port")
    s.add_argument(
        "--all-gateways",
        metavar="URL",
        help="simulate every gateway of the registry, all on this broker (city scale)",
    )
    s.add_argument("--scenario")
    s.add_argument("--duration", type=float, help="device seconds (default: until Ctrl-C)")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--time-scale", type=float, default=1.0)
    s.add_argument("--interval", type=float, default=10.0, help="reporting interval, s")
    s.add_argument("--elevator-moving-interval", type=float, default=1.0)
    s.add_argument("--elevator-idle-interval", type=float, default=2.0)
    s.add_argument("--false-alarms-per-year", type=float, default=0.2, help="per detector")
    s.add_argument("--camera-events-per-hour", type=float, default=0.5, help="per camera")
    s.add_argument("--traffic", type=float, default=1.0, help="elevator and door traffic x")
    s.add_argument("--progress-every", type=float, default=10.0, help="seconds between lines")
    s.set_defaults(func=cmd_simulate)
    gen_sub = s.add_subparsers(dest="simulate_command", metavar="generate-registry")
    g = gen_sub.add_parser(
        "generate-registry", help="write a registry for a city of any size in Jiaxing"
    )
    g.add_argument("--communities", type=int, default=300)
    g.add_argument("--out", required=True)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--buildings-min", type=int, default=4)
    g.add_argument("--buildings-max", type=int, default=12)
    g.add_argument("--smoke-per-building", type=int, default=6)
    g.add_argument(
        "--district",
        action="append",
        default=[],
        help="district code to use (repeat; default all seven of Jiaxing)",
    )
    g.set_defaults(func=cmd_generate_registry)
