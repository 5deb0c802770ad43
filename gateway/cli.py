"""``anju gateway ...`` sub-commands (only argparse at import time)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def cmd_run(args: argparse.Namespace) -> int:
    from anju.cli import stop_on_signals
    from gateway import load_gateway_config
    from gateway.remote import serve

    path = Path(args.config)
    serve(load_gateway_config(path), stop_on_signals(), config_path=path)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from gateway import load_gateway_config
    from gateway.status import format_status, gather_status

    s = gather_status(load_gateway_config(Path(args.config)))
    print(json.dumps(s) if args.json else format_status(s))
    return 0 if s["running"] else 1


def cmd_push_config(args: argparse.Namespace) -> int:
    from gateway.push import push_config

    change: dict[str, Any] = {}
    if args.file:
        from anju.yamlfile import read_yaml

        data, _node = read_yaml(Path(args.file))
        change = data or {}
    for item in args.set or []:
        key, _, raw = item.partition("=")
        import yaml

        cur = change
        parts = key.split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = yaml.safe_load(raw)
    result = push_config(args.mqtt, args.gateway, args.version, change, wait_s=args.wait)
    print(json.dumps(result, ensure_ascii=False))
    return 0 if result.get("ok") else 1


def register(sub: Any) -> None:
    g = sub.add_parser("gateway", help="the community gateway").add_subparsers(
        dest="sub", required=True
    )
    gr = g.add_parser("run", help="run a gateway")
    gr.add_argument("--config", required=True, help="gateway YAML")
    gr.set_defaults(func=cmd_run)

    gs = g.add_parser("status", help="outbox depth, oldest record, link state, drops")
    gs.add_argument("--config", required=True, help="gateway YAML")
    gs.add_argument("--json", action="store_true", help="print one JSON object")
    gs.set_defaults(func=cmd_status)

    gp = g.add_parser(
        "push-config", help="publish a configuration change for a gateway and wait for its result"
    )
    gp.add_argument(
        "--mqtt", required=True, help="the backend's broker, mqtt://user:pass@host:port"
    )
    gp.add_argument("--gateway", required=True, help="gateway id")
    gp.add_argument("--version", type=int, required=True, help="new version (> the running one)")
    gp.add_argument("--file", help="YAML with the keys to change")
    gp.add_argument("--set", action="append", help="KEY=VALUE, e.g. outbox.replay_rate=500")
    gp.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the result")
    gp.set_defaults(func=cmd_push_config)
