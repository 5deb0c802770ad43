"""Remote configuration pushed from the backend's broker, validated, applied, rolled back.

The backend (or an operator with ``anju gateway push-config``) publishes, retained, on
``anju/gw/{gw}/config``: ``{"version": N, "config": {...}}``, the keys to change, merged over
the running configuration. The gateway:

1. ignores it unless ``N`` is newer than its ``config_version`` and not a version it refused;
2. validates the merged configuration (same rules as the file; ``gateway_id`` and
   ``outbox.path`` cannot be changed remotely); an invalid one is refused and reported;
3. stops its parts (the LAN session keeps what devices send meanwhile) and starts again with the
   new configuration; if the uplink is not connected within ``remote_config.apply_timeout_s``,
   it starts again with the previous configuration, and the version is remembered as refused;
4. once the new configuration has reached the broker, writes it to the configuration file
   (atomically; the previous file is kept as ``<file>.prev``);
5. publishes the result, retained, on ``anju/gw/{gw}/config/result``:
   ``{"version": N, "ok": true|false, "error": ..., "ts": ms}``.

The payload is read within bounds (``MAX_CONFIG_BYTES``, ``anju.canonical``: nesting, numbers,
strings); anything else is refused and reported like an invalid configuration, never raised.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from anju import canonical
from anju.canonical import InputError
from gateway.config import GatewayConfig

log = logging.getLogger("anju.gateway.remote")
MAX_CONFIG_BYTES = 64 * 1024
_FIXED = (("gateway_id",), ("outbox", "path"))


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


def _get(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = doc
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


def parse_remote(
    current: GatewayConfig, payload: bytes, *, rejected_version: int = 0
) -> RemoteRequest | RemoteResult | None:
    """A valid request, a refusal to report, or None (nothing to do). Pure."""
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
    for path in _FIXED:
        v = _get(change, path)
        if v is not None and str(v) != str(_get(current.model_dump(mode="json"), path)):
            return RemoteResult(version, False, f"{'.'.join(path)} cannot be changed remotely")
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
    return RemoteRequest(version, cfg)


def save_config(path: Path, cfg: GatewayConfig) -> None:
    """Write the configuration file atomically, keeping the previous one as ``.prev``."""
    text = yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True), sort_keys=False)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
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
