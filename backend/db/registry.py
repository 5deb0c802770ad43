"""The registry's device -> community map in the database (``device_registry``), for the queries
by community. The backend calls :func:`sync_registry` at start with the devices it loaded."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import psycopg


class RegistryRow(NamedTuple):
    device_id: str
    community_id: str
    kind: str


async def sync_registry(conn: psycopg.AsyncConnection, devices: Iterable[RegistryRow]) -> int:
    """Make ``device_registry`` hold exactly these devices (one transaction); return how many."""
    rows = list(devices)
    async with conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE registry_in (device_id text, community_id text, kind text)"
            " ON COMMIT DROP"
        )
        async with conn.cursor().copy(
            "COPY registry_in (device_id, community_id, kind) FROM STDIN"
        ) as cp:
            for r in rows:
                await cp.write_row(r)
        await conn.execute(
            "DELETE FROM device_registry d WHERE NOT EXISTS"
            " (SELECT 1 FROM registry_in i WHERE i.device_id = d.device_id)"
        )
        await conn.execute(
            "INSERT INTO device_registry SELECT DISTINCT ON (device_id) * FROM registry_in"
            " ON CONFLICT (device_id) DO UPDATE SET community_id = excluded.community_id,"
            " kind = excluded.kind WHERE (device_registry.community_id, device_registry.kind)"
            " IS DISTINCT FROM (excluded.community_id, excluded.kind)"
        )
    return len(rows)
