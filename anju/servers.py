"""Private Mosquitto and PostgreSQL servers in a data folder, on free loopback ports.

Used by ``anju demo`` and by the tests. They run the system's binaries; a missing binary is a
``ServerError`` that says how to install it (never a quiet skip). Each server is a child process
that dies with its parent (``PR_SET_PDEATHSIG``), so a killed demo or test run leaves nothing
behind; ``stop()`` shuts it down cleanly within a few seconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import hashlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

from anju.errors import ServerError

if TYPE_CHECKING:
    from anju.provision.model import BrokerFiles

INSTALL_HINT: Final = {
    "mosquitto": "install Mosquitto: `sudo apt-get install mosquitto` (Debian/Ubuntu), "
    "`brew install mosquitto` (macOS)",
    "postgres": "install PostgreSQL 14 or newer: `sudo apt-get install postgresql` "
    "(Debian/Ubuntu), `brew install postgresql` (macOS); or set ANJU_PG_BIN to its bin folder",
}
_PR_SET_PDEATHSIG: Final = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setpgrp()  # Ctrl-C in a terminal reaches the parent only; it stops children in order.


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"the server on port {port} exited with code {proc.returncode}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ServerError(f"nothing listened on 127.0.0.1:{port} within {timeout:.0f} s")


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 8
) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def find_mosquitto() -> str:
    exe = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)),
        None,
    )
    if exe is None:
        raise ServerError(f"mosquitto was not found; {INSTALL_HINT['mosquitto']}")
    return exe


def find_pg_bin() -> Path:
    """The folder holding initdb and postgres."""
    candidates: list[str] = []
    if env := os.environ.get("ANJU_PG_BIN"):
        candidates.append(env)
    if exe := shutil.which("initdb"):
        candidates.append(str(Path(exe).resolve().parent))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    candidates += sorted(glob.glob("/opt/homebrew/opt/postgresql*/bin"), reverse=True)
    for c in candidates:
        if (Path(c) / "initdb").exists() and (Path(c) / "postgres").exists():
            return Path(c)
    raise ServerError(
        f"PostgreSQL's initdb and postgres were not found; {INSTALL_HINT['postgres']}"
    )


def find_timescaledb(bindir: Path) -> Path | None:
    """The ``timescaledb.control`` of the PostgreSQL whose binaries are in ``bindir``, when its
    loader library is installed beside it (such a server can preload TimescaleDB)."""
    shares = [bindir.parent / "share" / "postgresql", bindir.parent / "share"]
    libs = [bindir.parent / "lib" / "postgresql", bindir.parent / "lib"]
    if (pg_config := bindir / "pg_config").exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
            out = subprocess.run(
                [str(pg_config), "--sharedir", "--pkglibdir"],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout.split()
            share, lib = out[:2]
            shares.insert(0, Path(share))
            libs.insert(0, Path(lib))
    control = next(
        (c for s in shares if (c := s / "extension" / "timescaledb.control").exists()), None
    )
    if control is None:
        return None
    loader = ("timescaledb.so", "timescaledb.dylib")
    return control if any((d / n).exists() for d in libs for n in loader) else None


# Packet size limits of the shipped Mosquitto configurations (deploy/mosquitto/*.conf): the
# backend's broker (gateways' batches, at most 1 MiB before compression, alerts), and a
# community's LAN broker (a device's payload of at most 64 KiB, its topic and headers).
UPLINK_MAX_PACKET_SIZE = 4 * 1024 * 1024
LAN_MAX_PACKET_SIZE = 64 * 1024 + 1024


class PrivateMosquitto:
    """A Mosquitto broker of our own: persistence in ``data_dir``, loopback only; anonymous,
    or with a provisioned folder's passwords, ACL and (``tls``) certificates.

    ``max_packet_size`` bounds every packet a client may send (Mosquitto disconnects a client
    that sends a larger one, before buffering it): 4 MiB by default, as in ``deploy/mosquitto``'s
    backend broker; a community's LAN broker uses ``LAN_MAX_PACKET_SIZE``.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        name: str = "mosquitto",
        password_file: Path | None = None,
        acl_file: Path | None = None,
        max_packet_size: int = UPLINK_MAX_PACKET_SIZE,
        provisioned: BrokerFiles | None = None,
        tls: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.name = name
        self.password_file = password_file
        self.acl_file = acl_file
        self.max_packet_size = max_packet_size
        # A folder of `anju provision` (anju/provision/): authentication, its ACL, client ids
        # bound to user names, and TLS with the city's CA when ``tls``.
        self.provisioned = provisioned
        self.tls = tls and provisioned is not None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def _provisioned_conf(self, files: BrokerFiles) -> str:
        from anju.provision.mosquitto import Listener, mosquitto_conf

        return mosquitto_conf(
            files,
            [Listener(self.port, "127.0.0.1", tls=self.tls)],
            data_dir=self.data_dir,
            log_file=self.data_dir / "mosquitto.log",
            run_as_root=os.geteuid() == 0,
            max_packet_size=self.max_packet_size,
        )

    def start(self) -> PrivateMosquitto:
        exe = find_mosquitto()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if self.password_file else 'true'}",
            "persistence true",
            f"persistence_location {self.data_dir}/",
            "autosave_interval 5",
            "max_queued_messages 100000",
            "max_inflight_messages 100",
            "set_tcp_nodelay true",
            f"max_packet_size {self.max_packet_size}",
            f"log_dest file {self.data_dir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if self.password_file is not None:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise it drops to 'mosquitto', who cannot write here
        text = "\n".join(lines) + "\n"
        if self.provisioned is not None:
            text = self._provisioned_conf(self.provisioned)
        conf.write_text(text)
        self.proc = subprocess.Popen(
            [exe, "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        try:
            wait_port(self.port, 10, self.proc)
        except ServerError as exc:
            self.stop()
            raise ServerError(f"{self.name}: {exc}; see {self.data_dir / 'mosquitto.log'}") from exc
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


class PrivatePostgres:
    """A PostgreSQL cluster of our own in ``data_dir``, TCP on 127.0.0.1 only, trust auth;
    TimescaleDB preloaded when the binaries have it (``timescaledb``: None decides so, unless
    ``ANJU_PG_TIMESCALE=off``; True insists; False never), ``self.timescaledb`` says which.

    PostgreSQL refuses to run as root; when we are root it runs as the system's ``postgres``
    user (which owns the data folder).
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        dbname: str = "anju",
        timescaledb: bool | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.dbname = dbname
        # None: preload TimescaleDB when the binaries have it (unless ANJU_PG_TIMESCALE=off)
        self._want_timescaledb = timescaledb
        self.timescaledb = False
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def url(self, dbname: str | None = None) -> str:
        return f"postgresql://anju@127.0.0.1:{self.port}/{dbname or self.dbname}"

    def _run_as(self) -> tuple[int | None, int | None, Callable[[], None]]:
        if os.geteuid() != 0:
            return None, None, _die_with_parent
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise ServerError(
                "PostgreSQL refuses to run as root and there is no 'postgres' user to run it as; "
                "run anju as a normal user, or create one: `sudo useradd --system postgres`"
            ) from exc
        return pw.pw_uid, pw.pw_gid, _die_with_parent

    def _pgdata(self, uid: int | None, gid: int | None) -> Path:
        """Where the cluster lives. As root, the ``postgres`` user must reach it: when a
        folder on the way is closed to others (``/root``, pytest's temporary folders), the
        cluster goes to a folder of its own under /var/tmp, named after ``data_dir``."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if uid is None or gid is None:
            return self.data_dir / "pgdata"
        home = self.data_dir.resolve()
        if not all(os.stat(p).st_mode & 0o001 for p in [home, *home.parents]):
            digest = hashlib.sha256(str(home).encode()).hexdigest()[:12]
            home = Path("/var/tmp") / f"anju-pg-{digest}"
            home.mkdir(mode=0o700, exist_ok=True)
            (self.data_dir / "PGDATA-IS-ELSEWHERE").write_text(f"{home / 'pgdata'}\n")
        os.chown(home, uid, gid)
        return home / "pgdata"

    def start(self) -> PrivatePostgres:
        bindir = find_pg_bin()
        uid, gid, pre = self._run_as()
        pgdata = self.pgdata = self._pgdata(uid, gid)
        if not (pgdata / "PG_VERSION").exists():
            if pgdata.exists():
                shutil.rmtree(pgdata)  # a half-made cluster from an interrupted initdb
            res = subprocess.run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    "anju",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                capture_output=True,
                user=uid,
                group=gid,
                check=False,
            )
            if res.returncode != 0:
                raise ServerError(f"initdb failed: {res.stderr.decode(errors='replace')[-800:]}")
        self._wait_for_previous(pgdata)
        want = self._want_timescaledb
        if want is None:
            want = os.environ.get("ANJU_PG_TIMESCALE", "").lower() not in ("0", "off", "no")
            want = want and find_timescaledb(bindir) is not None
        elif want and find_timescaledb(bindir) is None:
            raise ServerError(f"the PostgreSQL in {bindir} has no TimescaleDB")
        self.timescaledb = want
        preload = (
            ["-c", "shared_preload_libraries=timescaledb", "-c", "timescaledb.telemetry_level=off"]
            if want
            else []
        )
        self._log = open(self.data_dir / "postgres.log", "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [
                str(bindir / "postgres"),
                *preload,
                "-D",
                str(pgdata),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=256MB",
                "-c",
                "fsync=on",
                "-c",
                "synchronous_commit=on",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            user=uid,
            group=gid,
            preexec_fn=pre,
        )
        try:
            wait_port(self.port, 30, self.proc)
            self._wait_ready()
        except ServerError as exc:
            self.stop()
            raise ServerError(f"postgres: {exc}; see {self.data_dir / 'postgres.log'}") from exc
        self.create_database(self.dbname)
        return self

    @staticmethod
    def _wait_for_previous(pgdata: Path, timeout: float = 30) -> None:
        """A server of an earlier run still shutting down (its parent was killed, and it got
        SIGTERM with it) holds ``postmaster.pid``: wait for it to go, up to ``timeout``."""
        pid_file = pgdata / "postmaster.pid"
        deadline = time.monotonic() + timeout
        while pid_file.exists():
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, 0)
                comm = Path(f"/proc/{pid}/comm")
                if comm.exists() and not comm.read_text().startswith(("postgres", "postmaster")):
                    return  # the number now belongs to another process: stale
            except (OSError, ValueError, IndexError):
                return  # stale (the process is gone): PostgreSQL removes it itself
            if time.monotonic() > deadline:
                raise ServerError(
                    f"another PostgreSQL (pid {pid}) still runs in {pgdata}; stop it first"
                )
            time.sleep(0.1)

    def _wait_ready(self) -> None:
        import psycopg  # only the backend's extras have it

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise ServerError(f"PostgreSQL did not accept connections: {exc}") from exc
                time.sleep(0.1)

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGINT, timeout=8)  # SIGINT: PostgreSQL's fast shutdown
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def destroy(self) -> None:
        """Stop, and delete the cluster (for throw-away test servers)."""
        self.stop()
        pgdata: Path | None = getattr(self, "pgdata", None)
        if pgdata is not None:
            shutil.rmtree(
                pgdata.parent if pgdata.parent != self.data_dir else pgdata, ignore_errors=True
            )
