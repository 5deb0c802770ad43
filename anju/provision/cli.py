"""``anju provision``: provision a city from its registry; ``--rotate NAME`` gives an identity
new secrets; ``--show NAME`` prints one identity's credentials (the only command that prints a
secret)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from anju.errors import ConfigError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "provision",
        help="CA, certificates, broker identities, ACLs and API tokens for a city",
        description="Provision a city from its registry into a private folder. Re-running "
        "keeps existing identities and adds new ones; --rotate gives the named ones new "
        "secrets. Prints no secret unless --show asks for one.",
    )
    p.add_argument("--registry", required=True, help="the city's registry YAML")
    p.add_argument("--out", required=True, help="folder for the city's secrets and broker files")
    p.add_argument(
        "--hostname", action="append", default=[],
        help="a name of the backend broker for its certificate (repeat; localhost is included)",
    )  # fmt: skip
    p.add_argument(
        "--lan-hostname", action="append", default=[],
        help="a name every LAN broker also answers to (repeat)",
    )  # fmt: skip
    p.add_argument("--workers", type=int, default=1, help="backend workers (one user each)")
    p.add_argument("--org", default="anju", help="organisation named in the certificates")
    p.add_argument(
        "--rotate", action="append", default=[], metavar="NAME",
        help="give this identity (user name, broker/user, or API token name) new secrets",
    )  # fmt: skip
    p.add_argument("--renew-certificates", action="store_true", help="reissue every certificate")
    p.add_argument(
        "--show", metavar="NAME", help="print this identity's credentials (JSON) and stop"
    )
    p.set_defaults(func=cmd_provision)


def cmd_provision(args: argparse.Namespace) -> int:
    from anju.provision.city import provision

    if args.show:
        return _show(Path(args.out), args.show)
    r = provision(
        Path(args.registry),
        Path(args.out),
        hostnames=args.hostname,
        lan_hostnames=args.lan_hostname,
        workers=args.workers,
        org=args.org,
        rotate=args.rotate,
        renew_certificates=args.renew_certificates,
    )
    print(
        f"{r.out_dir}: {len(r.identities)} broker identities, {len(r.tokens)} API tokens, "
        f"{len(r.lan)} LAN brokers; {len(r.created)} new, {len(r.rotated)} rotated, "
        f"{len(r.removed)} removed; {len(r.certificates_issued)} certificates issued"
    )
    for what, keys in (("new", r.created), ("rotated", r.rotated), ("removed", r.removed)):
        for k in keys:
            print(f"  {what}: {k}")
    print(f"CA: {r.ca_file}; secrets: {r.secrets_file} (keep it private)")
    return 0


def _show(out: Path, name: str) -> int:
    from anju.provision.store import SecretStore

    store = SecretStore.load(out / "secrets.json")
    found: dict[str, Any] = {}
    for key, s in store.passwords.items():
        if name in (key, key.rsplit("/", 1)[-1]):
            found[key] = {"username": key.rsplit("/", 1)[-1], "password": s.password}
    if name in store.tokens:
        found[f"api/{name}"] = {"token": store.tokens[name].token}
    if not found:
        raise ConfigError(f"{out / 'secrets.json'}: no identity called {name!r}")
    json.dump(found, sys.stdout, indent=1)
    print()
    return 0
