"""Remote configuration pushed from the backend's broker, validated, applied, rolled back.

The backend (or an operator with ``anju gateway push-config``) publishes, retained, on
``anju/gw/{gw}/config``: ``{"version": N, "config": {...}}``, the keys to change, merged over
the running configuration. The gateway:

1. ignores it unless ``N`` is newer than its ``config_version`` and not a version it refused;
2. validates the merged configuration (same rules as the file) and compares it with the running
   one key by key: only the keys of ``REMOTE_KEYS`` may differ (reporting intervals, lingers,
   windows, pacing, the log level, supervision, a Modbus controller's polling), the device list
   may change but not become empty, and the outbox's disk budget may not go below what its file
   holds. Anything else (the uplink's or the LAN's address and credentials, ``gateway_id``,
   ``outbox.path``, the adapters' listeners and bindings, the remote-configuration policy) is
   refused with the keys named, and reported. Only the operator identity may publish on
   ``anju/gw/+/config`` (``anju.acl``: the backend's workers are denied it);
3. stops its parts (the LAN session keeps what devices send meanwhile) and starts again with the
   new configuration; if the uplink is not connected within ``remote_config.apply_timeout_s``,
   it starts again with the previous configuration, and the version is remembered as refused;
4. once the new configuration has reached the broker, writes it to the configuration file
   (atomically; the previous file is kept as ``<file>.prev``; the new file keeps the old one's
   mode, 0640 when there was none, and its owner and group);
5. publishes the result, retained, on ``anju/gw/{gw}/config/result``:
   ``{"version": N, "ok": true|false, "error": ..., "ts": ms}``.

The payload is read within bounds (``MAX_CONFIG_BYTES``, ``anju.canonical``: nesting, numbers,
strings); anything else is refused and reported like an invalid configuration, never raised.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import ValidationError

from anju import canonical
from anju.canonical import InputError
from gateway.config import GatewayConfig

log = logging.getLogger("anju.gateway.remote")
MAX_CONFIG_BYTES = 64 * 1024
FILE_MODE: Final = 0o640

# The keys a remote configuration may change ("*": any key or list position). Everything else
# is refused: the uplink's and the LAN's addresses and credentials (a push must not send the
# gateway, its password and its outbox to another broker), gateway_id, outbox.path, the
# adapters' listeners and bindings, the events' per-device shares (shrinking them deletes
# alarms), and remote_config itself. docs/gateway.md lists them for operators.
REMOTE_KEYS: Final = (
    "devices",  # not emptied: checked below
    "heartbeat_s",
    "status_every_s",
    "log_level",
    "uplink.compress",
    "uplink.keepalive_s",
    "uplink.backoff_base_s",
    "uplink.backoff_cap_s",
    "uplink.fast_backoff_cap_s",
    "uplink.fast_backoff_for_s",
    "uplink.connect_timeout_s",
    "outbox.max_bytes",  # not below what the file holds: checked below
    "outbox.resend_after_s",
    "outbox.events_resend_after_s",
    "outbox.batch_max",
    "outbox.window",
    "outbox.events_window",
    "outbox.replay_rate",
    "outbox.commit_max",
    "outbox.queue_max",
    "outbox.commit_linger_ms",
    "outbox.send_linger_ms",
    "outbox.batch_bytes_max",
    "clock.hold_max_s",
    "supervision.*",
    "gbt26875.time_sync_s",
    "gbt26875.idle_timeout_s",
    "gbt26875.partial_timeout_s",
    "modbus.controllers.*.poll_s",
    "modbus.controllers.*.report_s",
    "modbus.controllers.*.timeout_s",
    "modbus.controllers.*.backoff_max_s",
    "modbus.controllers.*.offline_after",
)
_ALLOWED = tuple(tuple(k.split(".")) for k in REMOTE_KEYS)
_MISSING: Final = object()


@dataclass(frozen=True, slots=True)
class RemoteRequest:
    version: int
    config: GatewayConfig


@dataclass(frozen=True, slots=True)
class RemoteResult:
    version: int
    ok: bool
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "ok": self.ok,
                "error": self.error,
                "ts": time.time_ns() // 1_000_000,
            },
            ensure_ascii=False,
        )


def merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """``change`` over ``base``, recursively for nested mappings."""
    out = dict(base)
    for k, v in change.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def changed_keys(old: Any, new: Any, at: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The keys whose values differ, as paths; lists of mappings of the same length are
    compared position by position (``modbus.controllers.0.poll_s``), other lists whole."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[tuple[str, ...]] = []
        for k in sorted(old.keys() | new.keys()):
            out += changed_keys(old.get(k, _MISSING), new.get(k, _MISSING), (*at, str(k)))
        return out
    if (
        isinstance(old, list)
        and isinstance(new, list)
        and len(old) == len(new)
        and all(isinstance(x, dict) for x in old + new)
    ):
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out += changed_keys(a, b, (*at, str(i)))
        return out
    return [] if old == new else [at]


def allowed(path: tuple[str, ...]) -> bool:
    """Whether a remote configuration may change the key at ``path`` (``REMOTE_KEYS``)."""
    return any(
        len(path) >= len(a)
        and all(p == "*" or p == k for p, k in zip(a, path, strict=False))
        and (len(path) == len(a) or a[-1] == "*")
        for a in _ALLOWED
    )


def refusal(current: GatewayConfig, new: GatewayConfig, *, outbox_bytes: int = 0) -> str | None:
    """Why ``new`` may not replace ``current`` remotely, or None when it may."""
    old_doc = current.model_dump(mode="json")
    new_doc = new.model_dump(mode="json")
    old_doc.pop("config_version", None)
    new_doc.pop("config_version", None)
    forbidden = [".".join(p) for p in changed_keys(old_doc, new_doc) if not allowed(p)]
    if forbidden:
        return (
            f"may not be changed remotely: {', '.join(forbidden)} "
            "(only the keys listed in docs/gateway.md, 'Remote configuration')"
        )
    if not new.devices:
        return "devices: a remote configuration may not empty the device list"
    if new.outbox.max_bytes < min(outbox_bytes, current.outbox.max_bytes):
        return (
            f"outbox.max_bytes: {new.outbox.max_bytes} is below the {outbox_bytes} bytes "
            "the outbox holds"
        )
    return None


def parse_remote(
    current: GatewayConfig,
    payload: bytes,
    *,
    rejected_version: int = 0,
    outbox_bytes: int = 0,
) -> RemoteRequest | RemoteResult | None:
    """A valid request, a refusal to report, or None (nothing to do). Pure. ``outbox_bytes``:
    what the outbox's file holds (its disk budget may not go below)."""
    try:
        doc = canonical.clean(canonical.loads(payload, max_bytes=MAX_CONFIG_BYTES))
    except InputError as exc:
        return RemoteResult(0, False, f"not a configuration ({exc.reason}): {exc.detail}")
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        return RemoteResult(0, False, 'expected {"version": N, "config": {...}}')
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return RemoteResult(0, False, "version must be a positive integer")
    if version <= current.config_version or version == rejected_version:
        return None
    change: dict[str, Any] = doc["config"]
    merged = merge(current.model_dump(mode="json"), change)
    merged["config_version"] = version
    try:
        cfg = GatewayConfig.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        return RemoteResult(version, False, problems)
    why = refusal(current, cfg, outbox_bytes=outbox_bytes)
    if why is not None:
        return RemoteResult(version, False, why)
    return RemoteRequest(version, cfg)


def save_config(path: Path, cfg: GatewayConfig) -> None:
    """Write the configuration file atomically, keeping the previous one as ``.prev``; the new
    file has the previous one's mode (``FILE_MODE`` when there was none), owner and group (it
    holds passwords: never readable by everyone, not even for a moment)."""
    text = yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True), sort_keys=False)
    try:
        st: os.stat_result | None = path.stat()
    except FileNotFoundError:
        st = None
    mode = FILE_MODE if st is None else stat.S_IMODE(st.st_mode)
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        if st is not None and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
            try:
                os.fchown(f.fileno(), st.st_uid, st.st_gid)
            except PermissionError:
                log.warning(
                    "cannot give %s back to uid %d gid %d: it is now the gateway's own",
                    path,
                    st.st_uid,
                    st.st_gid,
                )
        os.fchmod(f.fileno(), mode)
        f.write("# written by anju gateway (remote configuration)\n" + text)
        f.flush()
        os.fsync(f.fileno())
    if path.exists():
        os.replace(path, path.with_name(path.name + ".prev"))
    os.replace(tmp, path)


def serve(cfg: GatewayConfig, stop: threading.Event, *, config_path: Path | None) -> None:
    """Run the gateway, applying remote configurations with rollback (see the docstring)."""
    from gateway.service import REJECTED_VERSION_KEY, Gateway

    pending: RemoteResult | None = None
    while not stop.is_set():
        gw = Gateway(cfg)
        if pending is not None:
            if not pending.ok:
                gw.outbox.set_meta(REJECTED_VERSION_KEY, pending.version)
            gw.report(pending)
            pending = None
        request = gw.run(stop)
        if request is None:
            return
        gw.metrics.config_results.labels("received").inc()
        trial = Gateway(request.config)
        ok = threading.Event()
        result: list[RemoteRequest | None] = []
        failed: list[BaseException] = []

        def run_trial(
            t: Gateway = trial,
            until: threading.Event = ok,
            out: list[RemoteRequest | None] = result,
            err: list[BaseException] = failed,
        ) -> None:
            try:
                out.append(t.run(stop, until=until))
            except BaseException as exc:  # re-raised below: the process must not exit 0
                err.append(exc)

        # The trial runs for real; if its uplink comes up in time it simply continues.
        thread = threading.Thread(target=run_trial, name="gateway-config-trial", daemon=True)
        thread.start()
        reached = trial.link.ready.wait(request.config.remote_config.apply_timeout_s)
        if reached:
            if config_path is not None:
                save_config(config_path, request.config)
            trial.report(RemoteResult(request.version, True))
            log.info("remote configuration %d applied", request.version)
            cfg = request.config
            thread.join()  # runs until stop, or until a further configuration arrives:
            if failed:
                raise failed[0]
            if not result or result[0] is None:
                return
            continue  # then start again; the retained newer configuration comes again
        ok.set()  # stop the trial
        thread.join(30)
        if failed:
            raise failed[0]
        log.error(
            "remote configuration %d did not reach the broker within %.0f s; rolled back",
            request.version,
            request.config.remote_config.apply_timeout_s,
        )
        pending = RemoteResult(
            request.version,
            False,
            f"the new configuration could not reach the broker {request.config.uplink.address()} "
            f"within {request.config.remote_config.apply_timeout_s:.0f} s; rolled back to "
            f"version {cfg.config_version}",
        )
