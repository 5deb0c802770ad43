"""A Mosquitto configuration for one provisioned broker folder (``OUT/backend`` or
``OUT/lan/<gw>``): authentication and the generated ACL always, client ids bound to user names,
and each listener plain or TLS with the city's CA. The shipped deploy/mosquitto/*.conf are the
same settings with /etc paths; this is for brokers started by a program (the demo, tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anju.provision.model import BrokerFiles


@dataclass(frozen=True, slots=True)
class Listener:
    port: int
    bind: str = "127.0.0.1"
    tls: bool = True
    require_certificate: bool = False  # mutual TLS: a client certificate from the city's CA


def mosquitto_conf(
    files: BrokerFiles,
    listeners: list[Listener],
    *,
    data_dir: Path,
    log_file: Path | None = None,
    run_as_root: bool = False,
    max_packet_size: int | None = None,
) -> str:
    lines = [
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {files.password_file}",
        f"acl_file {files.acl_file}",
        "persistence true",
        f"persistence_location {data_dir}/",
        "autosave_interval 5",
        "max_queued_messages 100000",
        "max_inflight_messages 100",
        "set_tcp_nodelay true",
    ]
    if max_packet_size is not None:
        lines.append(f"max_packet_size {max_packet_size}")
    if log_file is not None:
        lines += [
            f"log_dest file {log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
    if run_as_root:
        lines.append("user root")
    for ln in listeners:
        lines.append(f"listener {ln.port} {ln.bind}")
        # Client id = user name: nobody can take over (or wipe) another's session. A listener
        # setting in Mosquitto 2: it must follow each `listener` line (before the first one it
        # would open a default listener on 1883).
        lines.append("use_username_as_clientid true")
        if ln.tls:
            lines += [
                f"cafile {files.ca_file}",
                f"certfile {files.cert_file}",
                f"keyfile {files.key_file}",
                "tls_version tlsv1.2",
            ]
            if ln.require_certificate:
                lines += ["require_certificate true", f"crlfile {files.crl_file}"]
    return "\n".join(lines) + "\n"
