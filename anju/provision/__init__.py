"""Provisioning a city: a private CA, broker certificates, identities with hashed passwords,
ACLs (Mosquitto and EMQX) and hashed API tokens, from its registry.

``provision(registry, out_dir, ...) -> ProvisionResult`` is the whole interface (the demo and
the tests call it); ``anju provision`` is its command line (anju/provision/cli.py). The
certificate work needs ``cryptography`` (the backend extra): ``provision`` is imported when
first used, so that ``anju --help`` works on a gateway's core install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from anju.provision.model import ApiToken, BrokerFiles, Identity, ProvisionResult
from anju.provision.mosquitto import Listener, mosquitto_conf
from anju.provision.passwd import hash_password, verify_password
from anju.provision.tokens import load_token_digests

if TYPE_CHECKING:
    from anju.provision.city import provision, worker_names

__all__ = [
    "ApiToken",
    "BrokerFiles",
    "Identity",
    "Listener",
    "ProvisionResult",
    "hash_password",
    "load_token_digests",
    "mosquitto_conf",
    "provision",
    "verify_password",
    "worker_names",
]


def __getattr__(name: str) -> Any:
    if name in ("provision", "worker_names"):
        return getattr(importlib.import_module("anju.provision.city"), name)
    raise AttributeError(f"module 'anju.provision' has no attribute {name!r}")
