"""``provision``: a city's private CA, broker certificates, identities, ACLs and API tokens
from its registry. Re-running keeps what exists (passwords, tokens, certificates still good)
and adds what the registry gained; ``rotate`` names identities to give new secrets.

Output folder (documented in docs/deploy.md, "Provisioning a city"):

- ``secrets.json`` (0600): every clear password and token; ``ca.crt``, ``ca.key`` (0600);
  ``ca.crl`` and ``revoked.json``: client certificates revoked by rotation or removal;
- ``backend/``: the backend broker's ``passwd`` (hashed, 0640), ``acl``, ``ca.crt``,
  ``crl.pem``, ``server.crt``, ``server.key`` (0640), and ``emqx-acl.conf``,
  ``emqx-users.json`` (0640);
- ``lan/<gateway>/``: the same for that gateway's LAN broker;
- ``clients/<user>.crt|.key``: client certificates of gateways, backend workers and the operator;
- ``gateways/<gateway>.yaml`` (0600): the gateway's credentials, to merge into its gateway.yaml;
- ``workers/<worker>.env`` (0600): a backend worker's ``ANJU_MQTT_*`` settings;
- ``api/tokens.yaml`` (0640): the API tokens as SHA-256 digests (``tokens:`` of alerting.yaml).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from anju import acl
from anju.errors import ConfigError
from anju.provision import pki
from anju.provision.files import SECRET_MODE, SHARED_SECRET_MODE, write_if_changed, write_public
from anju.provision.model import ApiToken, BrokerFiles, Identity, ProvisionResult, Role
from anju.provision.passwd import hash_password, password_file
from anju.provision.store import Secret, SecretStore, TokenSecret
from anju.registry import Registry, load_registry

EMQX_ITERATIONS = 1000
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class _Want:
    broker: str
    username: str
    role: Role
    audience: str | None = None
    scope: str | None = None
    cert: bool = False
    twin_of: str | None = None  # shares this user's password (a worker's "-events" session)


def worker_names(workers: int) -> list[str]:
    """``anju-backend``, then ``anju-backend-2`` and so on."""
    return [
        acl.BACKEND_USER if i == 1 else f"{acl.BACKEND_USER}-{i}" for i in range(1, workers + 1)
    ]


def _wanted(reg: Registry, workers: int) -> list[_Want]:
    out: list[_Want] = []
    for w in worker_names(workers):
        out.append(_Want("backend", w, "backend", cert=True))
        out.append(_Want("backend", w + acl.EVENTS_SUFFIX, "backend-events", twin_of=w))
    out.append(_Want("backend", acl.OPERATOR_USER, "operator", cert=True))
    out.append(_Want("backend", acl.ALERTS_VIEWER_USER, "viewer"))
    for g in acl.gateway_ids(reg):
        out.append(_Want("backend", g, "gateway", cert=True))
    for audience, scope in acl.subscribers(reg):
        out.append(
            _Want("backend", acl.subscriber_user(audience, scope), "subscriber", audience, scope)
        )
    for com in reg.communities:
        for gw in com.gateways:
            lan = f"lan/{gw.id}"
            out.append(_Want(lan, gw.id, "gateway"))
            out.append(_Want(lan, acl.installer_user(gw.id), "installer"))
            out += [_Want(lan, d.id, "device") for d in com.devices if d.gateway == gw.id]
    return out


def _new_password() -> str:
    return secrets.token_urlsafe(24)


def _emqx(password: str) -> tuple[str, str]:
    salt = secrets.token_hex(8)
    dk = hashlib.pbkdf2_hmac("sha512", password.encode(), salt.encode(), EMQX_ITERATIONS, 64)
    return salt, dk.hex()


def _secret(password: str, *, emqx: bool) -> Secret:
    s = Secret(password, hash_password(password))
    if emqx:
        s.emqx_salt, s.emqx_hash = _emqx(password)
    return s


def _matches(name: str, want: _Want) -> bool:
    names = {want.username, f"{want.broker}/{want.username}"}
    if want.role == "backend":  # its alarm lane's twin names it too
        names |= {want.username + acl.EVENTS_SUFFIX, f"{want.broker}/{want.username}-events"}
    return name in names


def provision(
    registry: Registry | Path | str,
    out_dir: Path,
    *,
    hostnames: Sequence[str] = (),
    lan_hostnames: Sequence[str] = (),
    workers: int = 1,
    org: str = "anju",
    rotate: Iterable[str] = (),
    renew_certificates: bool = False,
) -> ProvisionResult:
    """Provision the city of ``registry`` into ``out_dir`` (see the module docstring).

    ``hostnames``: names of the backend broker besides localhost/127.0.0.1 (its server
    certificate's SANs); ``lan_hostnames``: the same for every LAN broker (the gateway's id is
    always one); ``workers``: backend workers, each its own user; ``rotate``: user names (or
    ``broker/user`` keys, or API token names) to give new secrets and certificates."""
    reg = registry if isinstance(registry, Registry) else load_registry(registry)
    if workers < 1:
        raise ConfigError(f"workers: {workers}; expected 1 or more")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o750)
    with _locked(out):
        return _provision(
            reg, out, hostnames=tuple(hostnames), lan_hostnames=tuple(lan_hostnames),
            workers=workers, org=org, rotate={rotate} if isinstance(rotate, str) else set(rotate),
            renew_certificates=renew_certificates,
        )  # fmt: skip


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One ``provision`` at a time on a folder (a second would read half-written secrets)."""
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{out}: another `anju provision` is working on it") from None
        yield
    finally:
        os.close(fd)


def _check_unique(wanted: list[_Want]) -> None:
    """Two parties with one user name on one broker (a device named like its gateway, a
    gateway named like a subscriber) would share a login: refuse, naming them."""
    seen: dict[tuple[str, str], _Want] = {}
    for w in wanted:
        other = seen.setdefault((w.broker, w.username), w)
        if other is not w:
            raise ConfigError(
                f"registry: {w.username!r} is both a {other.role} and a {w.role} on the "
                f"{w.broker} broker; rename one"
            )


def _provision(
    reg: Registry,
    out: Path,
    *,
    hostnames: tuple[str, ...],
    lan_hostnames: tuple[str, ...],
    workers: int,
    org: str,
    rotate: set[str],
    renew_certificates: bool,
) -> ProvisionResult:
    store_path = out / "secrets.json"
    store = SecretStore.load(store_path)
    wanted = _wanted(reg, workers)
    _check_unique(wanted)
    token_wants = [("admin", "admin", None)] + [
        (acl.subscriber_user(a, s), a, s) for a, s in acl.subscribers(reg)
    ]
    known = {w.username for w in wanted} | {f"{w.broker}/{w.username}" for w in wanted}
    unknown = sorted(rotate - known - {n for n, _, _ in token_wants})
    if unknown:
        raise ConfigError(f"rotate: no identity called {', '.join(unknown)} in this registry")

    created: list[str] = []
    rotated: list[str] = []
    passwords: dict[str, Secret] = {}
    for w in sorted(wanted, key=lambda w: w.twin_of is not None):  # twins after their worker
        key = f"{w.broker}/{w.username}"
        old = store.passwords.get(key)
        emqx = w.broker == "backend"
        if w.twin_of is not None:
            base = passwords[f"{w.broker}/{w.twin_of}"]
            if old is None or old.password != base.password:
                passwords[key] = _secret(base.password, emqx=emqx)
                (rotated if old is not None else created).append(key)
            else:
                passwords[key] = old
        elif old is None:
            passwords[key] = _secret(_new_password(), emqx=emqx)
            created.append(key)
        elif any(_matches(n, w) for n in rotate):
            passwords[key] = _secret(_new_password(), emqx=emqx)
            rotated.append(key)
        else:
            passwords[key] = old
    tokens: dict[str, TokenSecret] = {}
    for name, _, _ in token_wants:
        old_t = store.tokens.get(name)
        if old_t is None or name in rotate:
            t = "anju_" + secrets.token_urlsafe(32)
            tokens[name] = TokenSecret(t, hashlib.sha256(t.encode()).hexdigest())
            (created if old_t is None else rotated).append(f"api/{name}")
        else:
            tokens[name] = old_t
    removed = sorted(set(store.passwords) - set(passwords)) + sorted(
        f"api/{n}" for n in set(store.tokens) - set(tokens)
    )
    # Secrets first: a crash after this point loses nothing, a re-run writes the rest.
    SecretStore(passwords, tokens).save(store_path)

    ca, _ = pki.load_or_create_ca(out / "ca.crt", out / "ca.key", org=org)
    issued: list[Path] = []

    revoked = _load_revoked(out / "revoked.json")
    identities: dict[str, Identity] = {}
    for w in wanted:
        key = f"{w.broker}/{w.username}"
        cert = key_file = None
        if w.cert:
            cert, key_file = (
                out / "clients" / f"{w.username}.crt",
                out / "clients" / f"{w.username}.key",
            )
            if key in rotated:  # the old certificate goes on the revocation list
                _revoke(revoked, cert, w.username)
            force = renew_certificates or key in rotated
            if pki.issue(
                ca, cert, key_file, common_name=w.username, org=org, client=True, force=force
            ):
                issued.append(cert)
        identities[key] = Identity(
            w.broker, w.username, w.role, passwords[key].password, w.audience, w.scope, cert,
            key_file,
        )  # fmt: skip
    for stale in removed:
        if stale.startswith("backend/"):
            user = stale.removeprefix("backend/")
            _revoke(revoked, out / "clients" / f"{user}.crt", user)
            for ext in ("crt", "key"):
                (out / "clients" / f"{user}.{ext}").unlink(missing_ok=True)
    write_if_changed(
        out / "revoked.json", json.dumps(revoked, indent=1, sort_keys=True) + "\n", mode=0o644
    )
    when = {int(k, 16): dt.datetime.fromisoformat(v["at"]) for k, v in revoked.items()}
    pki.revocation_list(ca, out / "ca.crl", when)

    def broker_files(name: str, folder: Path, hosts: tuple[str, ...]) -> BrokerFiles:
        files = BrokerFiles(
            name=name,
            dir=folder,
            password_file=folder / "passwd",
            acl_file=folder / "acl",
            ca_file=folder / "ca.crt",
            cert_file=folder / "server.crt",
            key_file=folder / "server.key",
            crl_file=folder / "crl.pem",
            hosts=hosts,
        )
        write_if_changed(files.ca_file, (out / "ca.crt").read_text(), mode=0o644)
        write_if_changed(files.crl_file, (out / "ca.crl").read_text(), mode=0o644)
        if pki.issue(
            ca, files.cert_file, files.key_file, common_name=hosts[0], org=org, hosts=hosts,
            force=renew_certificates,
        ):  # fmt: skip
            issued.append(files.cert_file)
        os.chmod(files.key_file, SHARED_SECRET_MODE)
        users = {
            w.username: passwords[f"{w.broker}/{w.username}"].hash
            for w in wanted
            if w.broker == name
        }
        write_if_changed(files.password_file, password_file(users), mode=SHARED_SECRET_MODE)
        return files

    backend_hosts = tuple(dict.fromkeys([*hostnames, *LOOPBACK_HOSTS]))
    backend = broker_files("backend", out / "backend", backend_hosts)
    rules = acl.backend_rules(
        reg,
        backend_users=[w.username for w in wanted if w.role in ("backend", "backend-events")],
        operators=[acl.OPERATOR_USER],
        viewers=[acl.ALERTS_VIEWER_USER],
    )
    header = "The backend's broker (`anju provision`); run it with use_username_as_clientid."
    write_if_changed(backend.acl_file, acl.mosquitto_acl(rules, header=header), mode=0o644)
    write_if_changed(backend.dir / "emqx-acl.conf", acl.emqx_acl(rules, header=header), mode=0o644)
    write_if_changed(
        backend.dir / "emqx-users.json", _emqx_users(wanted, passwords), mode=SHARED_SECRET_MODE
    )

    lan: dict[str, BrokerFiles] = {}
    for gid in acl.gateway_ids(reg):
        hosts = tuple(dict.fromkeys([gid, *lan_hostnames, *LOOPBACK_HOSTS]))
        files = broker_files(f"lan/{gid}", out / "lan" / gid, hosts)
        lan_rules = acl.lan_rules(gid, installers=[acl.installer_user(gid)])
        text = acl.mosquitto_acl(lan_rules, header=f"LAN broker of {gid} (`anju provision`).")
        write_if_changed(files.acl_file, text, mode=0o644)
        lan[gid] = files

    api = {
        name: ApiToken(name, audience, scope, tokens[name].token, tokens[name].sha256)
        for name, audience, scope in token_wants
    }
    tokens_file = out / "api" / "tokens.yaml"
    write_if_changed(tokens_file, _tokens_yaml(api.values()), mode=SHARED_SECRET_MODE)
    for gid in lan:
        _gateway_handout(out, gid, identities)
    broker_host = hostnames[0] if hostnames else "localhost"
    for w in wanted:
        if w.role == "backend":
            _worker_env(out, identities[f"backend/{w.username}"], broker_host)
    write_public(out / "README.txt", _README)
    return ProvisionResult(
        out_dir=out,
        ca_file=out / "ca.crt",
        secrets_file=store_path,
        tokens_file=tokens_file,
        backend=backend,
        lan=lan,
        identities=identities,
        tokens=api,
        created=tuple(created),
        rotated=tuple(rotated),
        removed=tuple(removed),
        certificates_issued=tuple(issued),
    )


def _load_revoked(path: Path) -> dict[str, dict[str, str]]:
    """``revoked.json``: serial (hex) -> who and when, every client certificate revoked."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): {"user": str(v["user"]), "at": str(v["at"])} for k, v in data.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a revocation record ({exc})") from exc


def _revoke(revoked: dict[str, dict[str, str]], cert: Path, user: str) -> None:
    serial = pki.serial_of(cert)
    if serial is not None:
        at = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        revoked.setdefault(f"{serial:x}", {"user": user, "at": at})


def _emqx_users(wanted: list[_Want], passwords: dict[str, Secret]) -> str:
    """EMQX 5 built-in database users (import as JSON; authenticator: pbkdf2, sha512,
    EMQX_ITERATIONS iterations, dk_length 64, salt as the prefix-free ``salt`` string)."""
    rows = []
    for w in wanted:
        if w.broker != "backend":
            continue
        s = passwords[f"backend/{w.username}"]
        rows.append(
            {"user_id": w.username, "password_hash": s.emqx_hash, "salt": s.emqx_salt,
             "is_superuser": False}
        )  # fmt: skip
    return json.dumps(rows, indent=1) + "\n"


def _tokens_yaml(tokens: Iterable[ApiToken]) -> str:
    rows = []
    for t in tokens:
        row: dict[str, object] = {"name": t.name, "audience": t.audience}
        if t.scope is not None:
            row["scope"] = t.scope
        row["sha256"] = t.sha256
        rows.append(row)
    head = (
        "# API tokens as SHA-256 digests (`anju provision`): the `tokens:` of alerting.yaml.\n"
        "# The tokens themselves are in secrets.json; hand each to its holder.\n"
    )
    return head + yaml.safe_dump({"tokens": rows}, sort_keys=False, allow_unicode=True)


def _gateway_handout(out: Path, gid: str, ids: dict[str, Identity]) -> None:
    up, lan = ids[f"backend/{gid}"], ids[f"lan/{gid}/{gid}"]
    text = (
        f"# {gid}: credentials from `anju provision` (mode 0600). Merge into gateway.yaml;\n"
        "# copy ca.crt, clients/<gateway>.crt and .key to /etc/anju/ (scripts: deploy/gateway/).\n"
        + yaml.safe_dump(
            {
                "gateway_id": gid,
                "uplink": {
                    "username": up.username,
                    "password": up.password,
                    "ca_file": "/etc/anju/ca.crt",
                    "cert_file": f"/etc/anju/{gid}.crt",
                    "key_file": f"/etc/anju/{gid}.key",
                },
                "lan": {"username": lan.username, "password": lan.password},
            },
            sort_keys=False,
        )
    )
    write_if_changed(out / "gateways" / f"{gid}.yaml", text, mode=SECRET_MODE)


def _worker_env(out: Path, worker: Identity, host: str) -> None:
    """``workers/<name>.env``: the ``ANJU_MQTT_*`` settings of one backend worker, with the
    city folder mounted at /etc/anju/city (deploy/compose.yaml)."""
    text = (
        f"# Backend worker {worker.username} (`anju provision`; mode 0600). The alarm lane logs\n"
        f"# in as {worker.username}-events with the same password.\n"
        f"ANJU_CLIENT_ID={worker.username}\n"
        f"ANJU_MQTT_URL={worker.url(host, 8883)}\n"
        "ANJU_MQTT_CA_FILE=/etc/anju/city/ca.crt\n"
        f"ANJU_MQTT_CERT_FILE=/etc/anju/city/clients/{worker.username}.crt\n"
        f"ANJU_MQTT_KEY_FILE=/etc/anju/city/clients/{worker.username}.key\n"
    )
    write_if_changed(out / "workers" / f"{worker.username}.env", text, mode=SECRET_MODE)


_README = """\
Provisioned by `anju provision` (docs/deploy.md). Keep this folder private.

secrets.json          every clear password and API token (0600): the source of truth
ca.crt / ca.key       the city's certificate authority (give ca.crt to everyone; guard ca.key)
ca.crl, revoked.json  client certificates revoked (rotation, removal); brokers read crl.pem
backend/              the backend broker: passwd (hashed), acl, ca.crt, server.crt, server.key,
                      emqx-acl.conf, emqx-users.json (for an EMQX cluster instead)
lan/<gateway>/        that gateway's LAN broker: the same files
clients/<user>.*      client certificates (gateways, backend workers, operator)
gateways/<gw>.yaml    a gateway's credentials, to merge into its gateway.yaml
workers/<name>.env    a backend worker's ANJU_MQTT_* settings (city folder at /etc/anju/city)
api/tokens.yaml       API tokens as SHA-256 digests, for alerting.yaml
"""
