"""Provisioning a city: a private CA, broker certificates, identities with hashed passwords,
ACLs (Mosquitto and EMQX) and hashed API tokens, from its registry.

``provision(registry, out_dir, ...) -> ProvisionResult`` is the whole interface (the demo and
the tests call it); ``anju provision`` is its command line (anju/provision/cli.py).
"""

from anju.provision.city import provision, worker_names
from anju.provision.model import ApiToken, BrokerFiles, Identity, ProvisionResult
from anju.provision.mosquitto import Listener, mosquitto_conf
from anju.provision.passwd import hash_password, verify_password
from anju.provision.tokens import load_token_digests

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
