"""``anju gateway ...`` sub-commands (only argparse at import time)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def cmd_run(args: argparse.Namespace) -> int:
    from anju.cli import stop_on_signals
    from gateway import Gateway, load_gateway_config

    cfg = load_gateway_config(Path(args.config))
    Gateway(cfg).run(stop_on_signals())
    return 0


def register(sub: Any) -> None:
    g = sub.add_parser("gateway", help="the community gateway").add_subparsers(
        dest="sub", required=True
    )
    gr = g.add_parser("run", help="run a gateway")
    gr.add_argument("--config", required=True, help="gateway YAML")
    gr.set_defaults(func=cmd_run)
