"""``anju gateway status``: the outbox (read-only from its SQLite file) and the status file the
running gateway writes next to it every ``status_every_s`` seconds."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig
from gateway.outbox import read_depth


def write_status(path: Path, doc: dict[str, Any]) -> None:
    """Atomically replace the status file (write aside, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, separators=(",", ":")))
    os.replace(tmp, path)


def gather_status(cfg: GatewayConfig, *, now_ms: int | None = None) -> dict[str, Any]:
    """One document: outbox depth per lane, oldest unconfirmed record, link state, drops."""
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    out: dict[str, Any] = {"gateway_id": cfg.gateway_id, "outbox": str(cfg.outbox.path)}
    if cfg.outbox.path.exists():
        d = read_depth(cfg.outbox.path)
        out["depth"] = {"events": d.events, "telemetry": d.telemetry}
        out["oldest_unconfirmed_ms"] = d.oldest_created_ms
        out["oldest_unconfirmed_age_s"] = (
            None if d.oldest_created_ms is None else round((now - d.oldest_created_ms) / 1000, 1)
        )
        out["dropped_telemetry"] = d.dropped_telemetry
        out["dropped_events"] = d.dropped_events
        out["untimed"] = d.untimed
        out["size_bytes"] = sum(
            p.stat().st_size
            for p in (cfg.outbox.path, Path(f"{cfg.outbox.path}-wal"))
            if p.exists()
        )
        out["budget_bytes"] = cfg.outbox.max_bytes
    else:
        out["depth"] = None
    live: dict[str, Any] | None = None
    try:
        live = json.loads(cfg.status_path().read_text())
    except (OSError, ValueError):
        live = None
    stale_after = 3 * cfg.status_every_s * 1000 + 5000
    running = bool(
        live
        and live.get("running")
        and now - int(live.get("updated_ms", 0)) <= stale_after
        and _alive(int(live.get("pid", 0)))
    )
    out["running"] = running
    if live is not None:
        out["link"] = "up" if running and live["uplink"]["connected"] else "down"
        out["uplink"] = live["uplink"]
        out["lan_connected"] = live.get("lan_connected") if running else False
        out["inflight"] = live.get("inflight")
        out["clock_trusted"] = live.get("clock_trusted")
        out["config_version"] = live.get("config_version")
        out["status_updated_ms"] = live.get("updated_ms")
        out["healthy"] = bool(running and live.get("healthy", True))
        out["stalled"] = live.get("stalled") or [] if running else []
        out["adapters"] = live.get("adapters") if running else None
    else:
        out["link"] = "unknown (no status file)"
    return out


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _adapter_lines(adapters: dict[str, Any] | None, fmt_ms: Any) -> list[str]:
    """The UITD server and its connections, each Modbus controller (docs/adapters.md)."""
    if not adapters:
        return []
    lines: list[str] = []
    gbt = adapters.get("gbt26875")
    if gbt is not None:
        conns = gbt.get("connections") or []
        lines.append(f"gb/t 26875  listening on {gbt.get('listening')}, {len(conns)} connected")
        for c in conns:
            uitds = ", ".join(c.get("uitds") or []) or "no frame yet"
            lines.append(
                f"  uitd      {c.get('peer')}  since {fmt_ms(c.get('since_ms'))}"
                f"  last frame {fmt_ms(c.get('last_frame_ms'))}  ({uitds})"
            )
    for m in adapters.get("modbus") or []:
        why = f": {m['last_error']}" if m.get("last_error") else ""
        lines.append(
            f"modbus      {m.get('device')} at {m.get('address')}  {m.get('state')}"
            f"  last poll {fmt_ms(m.get('last_poll_ms'))}"
            f"  ({m.get('failures', 0)} failed in a row{why})"
        )
    return lines


def format_status(s: dict[str, Any]) -> str:
    def fmt_ms(ms: int | None) -> str:
        if ms is None:
            return "-"
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))

    lines = [f"gateway     {s['gateway_id']}  ({'running' if s['running'] else 'NOT RUNNING'})"]
    if s["running"]:
        if s.get("healthy", True):
            lines.append("health      ok (intake, commit, send and uplink make progress)")
        else:
            stalled = ", ".join(s.get("stalled") or []) or "a part failed"
            lines.append(f"health      NOT HEALTHY: no progress in {stalled}")
    lines.append(f"link        {s['link']}")
    up = s.get("uplink") or {}
    if up:
        lines.append(f"uplink      {up.get('url')}  last ack {fmt_ms(up.get('last_ack_ms'))}")
        if up.get("last_error"):
            lines.append(f"last error  {up['last_error']}")
    if s.get("depth") is None:
        lines.append(f"outbox      {s['outbox']} (does not exist yet)")
    else:
        d = s["depth"]
        lines.append(f"outbox      events {d['events']:,}  telemetry {d['telemetry']:,}")
        age = s["oldest_unconfirmed_age_s"]
        lines.append(
            f"oldest      {fmt_ms(s['oldest_unconfirmed_ms'])}"
            + ("" if age is None else f"  ({age:,.0f} s ago)")
        )
        lines.append(f"dropped     {s['dropped_telemetry']:,} readings (disk budget)")
        by_device = s.get("dropped_events") or {}
        if by_device:
            worst = sorted(by_device.items(), key=lambda kv: -kv[1])[:10]
            more = f" (and {len(by_device) - 10} more devices)" if len(by_device) > 10 else ""
            lines.append(
                f"dropped     {sum(by_device.values()):,} events over a device's share: "
                + ", ".join(f"{d} {n}" for d, n in worst)
                + more
            )
        lines.append(
            f"disk        {s['size_bytes']:,} of {s['budget_bytes']:,} bytes"
            + (f"; {s['untimed']:,} records waiting for the clock" if s["untimed"] else "")
        )
    lines.extend(_adapter_lines(s.get("adapters"), fmt_ms))
    if s.get("inflight") is not None and s["running"]:
        lines.append(f"in flight   {s['inflight']:,}")
    if s.get("config_version") is not None:
        lines.append(f"config      version {s['config_version']}")
    return "\n".join(lines)
