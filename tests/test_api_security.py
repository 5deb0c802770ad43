"""The API fails closed and scopes every right (issue 13): start-up refuses published and weak
secrets and a token-less API off loopback; on a real backend, the bearer header only (the query
token on the stream alone), resolving by the catalog's audiences, acknowledgements recorded with
the token's principal, telemetry limited to the audience's device kinds, 4xx for bad input,
health without internals, a bearer scheme in the OpenAPI document and ``/`` leading on."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiomqtt
import httpx
import pytest
import yaml

from anju.errors import ConfigError
from anju.servers import PrivateMosquitto, free_port
from anju.uplink import encode_batch, record_body, up_topic
from backend.alerting.catalog import SEVERITY
from backend.alerting.resolvers import may_resolve, resolvers
from backend.config import AlertingConfig, BackendSettings, TokenSpec, WebhookSpec, check_api_access
from backend.service import Backend

NH_GW, SMOKE, ELEV = "gw-jx-nh-0001-a", "jx-nh-0001-smoke-3-1201", "jx-nh-0001-elev-03"
TOKENS = {  # name: (audience, scope, resolve)
    "admin": ("admin", None, False),
    "fire-nh": ("fire", "330402", True),
    "fire-xz": ("fire", "330411", True),
    "greentown": ("property", "org-greentown-jx", True),
    "otis": ("maintenance", "org-otis-jx", True),
    "market-nh": ("market_supervision", "330402", True),
    "vanke": ("property", "org-vanke-jx", True),
    "otis-elsewhere": ("maintenance", "org-nobody", True),
    "committee-xz": ("community", "jx-xz-0001", False),
}


def test_resolvers_follow_the_catalog() -> None:
    assert not may_resolve("fire.alarm", "property")
    assert may_resolve("fire.alarm", "fire") and may_resolve("fire.alarm", "admin")
    assert may_resolve("fire.panel_fault", "property")
    assert may_resolve("elevator.trapped", "maintenance")
    assert not may_resolve("elevator.trapped", "property")
    assert not may_resolve("access.duress", "property")
    assert not may_resolve("no.such_type", "fire")
    assert all(resolvers(t) for t in SEVERITY)  # every catalog type has someone besides admin


def _settings(host: str = "127.0.0.1", token: str | None = None) -> BackendSettings:
    return BackendSettings(
        database_url="postgresql://x@127.0.0.1/x",
        mqtt_url="mqtt://127.0.0.1:1883",
        registry=Path("r.yaml"),
        api_host=host,
        api_token=token,
    )


def test_start_up_refuses_an_api_that_fails_open_or_published_secrets() -> None:
    none = AlertingConfig()
    check_api_access(_settings(), none)  # loopback, development
    with pytest.raises(ConfigError, match="ANJU_API_HOST"):
        check_api_access(_settings("0.0.0.0"), none)
    check_api_access(_settings("0.0.0.0", "a-long-enough-secret-token-here"), none)
    with pytest.raises(ConfigError, match="ANJU_API_TOKEN"):
        check_api_access(_settings("0.0.0.0", "short"), none)
    with pytest.raises(ConfigError, match="example"):
        check_api_access(_settings("0.0.0.0", "example-ops-token-that-is-long"), none)
    published = TokenSpec(
        name="operations",
        audience="admin",
        sha256="1a11d2911af588c66b5b8c9345777cb1d8adf408d4c0bde4075a49ce4bdb5cbb",
    )
    with pytest.raises(ConfigError, match="operations"):
        check_api_access(_settings("0.0.0.0"), AlertingConfig(tokens=[published]))
    hook = WebhookSpec(
        name="nanhu-fire-119",
        audience="fire",
        scope="330402",
        url="https://119.example.gov.cn/x",
        secret="change-me-to-a-long-random-secret",
    )
    own = TokenSpec(name="ops", audience="admin", token="x" * 40)
    with pytest.raises(ConfigError, match="nanhu-fire-119"):
        check_api_access(_settings("0.0.0.0"), AlertingConfig(tokens=[own], webhooks=[hook]))
    check_api_access(_settings("0.0.0.0"), AlertingConfig(tokens=[own]))


@pytest.mark.integration
async def test_rights_and_scopes_on_a_real_backend(
    db_url: str, broker: PrivateMosquitto, city_file: Path, tmp_path: Path
) -> None:
    alerting = tmp_path / "alerting.yaml"
    specs = []
    for n, (a, s, r) in TOKENS.items():
        spec: dict[str, object] = {"name": n, "audience": a, "token": f"tok-{n}", "resolve": r}
        if s is not None:
            spec["scope"] = s
        specs.append(spec)
    alerting.write_text(yaml.safe_dump({"tokens": specs}))
    port = free_port()
    backend = Backend(
        BackendSettings(
            database_url=db_url,
            mqtt_url=broker.url,
            registry=city_file,
            api_port=port,
            alerting=alerting,
        )
    )
    stop = asyncio.Event()
    task = asyncio.create_task(backend.run(stop), name="backend-under-test")
    try:
        await asyncio.wait_for(backend.started.wait(), 30)
        now = int(time.time() * 1000)
        rows = [
            (1, "boot-1", record_body(device_id=SMOKE, kind="e", ts=now, rx=now,
                                      gateway_timed=False, payload={"e": "alarm", "x": {}})),
            (2, "boot-1", record_body(device_id=ELEV, kind="t", ts=now, rx=now,
                                      gateway_timed=False, payload={"m": {"floor": 3}})),
        ]  # fmt: skip
        async with aiomqtt.Client("127.0.0.1", broker.port) as c:
            await c.publish(up_topic(NH_GW, events=True), encode_batch(NH_GW, rows), qos=1)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:

            def auth(name: str) -> dict[str, str]:
                return {"Authorization": f"Bearer tok-{name}"}

            async def code(path: str, name: str, **params: str) -> int:
                return (await http.get(path, headers=auth(name), params=params)).status_code

            deadline = time.monotonic() + 30
            while True:
                r = await http.get("/api/alerts", headers=auth("admin"))
                fires = [a for a in r.json() if a["type"] == "fire.alarm"]
                if fires:
                    break
                assert time.monotonic() < deadline, r.text
                await asyncio.sleep(0.2)
            alert = fires[0]["id"]

            # The bearer header; the query token only on the stream.
            assert (await http.get("/api/alerts")).status_code == 401
            q = await http.get("/api/alerts", params={"access_token": "tok-admin"})
            assert q.status_code == 401
            # Bad input is a 4xx, never a 500.
            assert await code("/api/alerts/not-a-uuid", "admin") == 422
            # Scopes: another district's brigade does not see it (404, not 403).
            assert await code(f"/api/alerts/{alert}", "fire-xz") == 404
            assert await code(f"/api/alerts/{alert}", "fire-nh") == 200
            # Rights: the property company sees the fire alarm but may not resolve it.
            assert await code(f"/api/alerts/{alert}", "greentown") == 200
            body = {"by": "", "note": "x"}
            r = await http.post(
                f"/api/alerts/{alert}/resolve", headers=auth("greentown"), json=body
            )
            assert r.status_code == 403, r.text
            # An acknowledgement is recorded with the token's principal.
            r = await http.post(
                f"/api/alerts/{alert}/ack", headers=auth("fire-nh"), json={"by": "Officer Li"}
            )
            assert r.status_code == 200, r.text
            audit = (await http.get(f"/api/alerts/{alert}/audit", headers=auth("fire-nh"))).json()
            assert any("fire-nh" in str(e) for e in audit), audit
            # The brigade resolves it.
            r = await http.post(f"/api/alerts/{alert}/resolve", headers=auth("fire-nh"), json=body)
            assert r.status_code == 200, r.text
            # Telemetry limited to the audience's device kinds: no elevator for the brigade.
            span = {"start": "2020-01-01T00:00:00Z", "end": "2020-01-02T00:00:00Z"}
            path = f"/api/telemetry/devices/{ELEV}/metrics/floor"
            assert await code(path, "fire-nh", **span) == 404
            assert await code(path, "market-nh", **span) == 200
            latest = await http.get(
                "/api/telemetry/communities/jx-nh-0001/latest", headers=auth("fire-nh")
            )
            assert all(row["device_id"] != ELEV for row in latest.json())
            # Every scoped route, with a token of each audience whose scope it is not: 404.
            day = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}
            scoped = [
                ("/api/telemetry/communities/jx-nh-0001/latest", {}),
                ("/api/telemetry/communities/jx-nh-0001/events", day),
                (f"/api/telemetry/devices/{SMOKE}/metrics/smoke", day),
                (f"/api/alerts/{alert}", {}),
                (f"/api/alerts/{alert}/audit", {}),
            ]
            for path, params in scoped:
                for outsider in ("fire-xz", "vanke", "otis-elsewhere", "committee-xz"):
                    assert await code(path, outsider, **params) == 404, (path, outsider)
                assert await code(path, "fire-nh", **params) == 200, path
            r = await http.post(f"/api/alerts/{alert}/ack", headers=auth("vanke"), json={})
            assert r.status_code == 404
            # Admin-only routes refuse every other audience.
            admin_only = ["/api/alerts/audit/verify", "/api/webhooks/dead-letters",
                          "/api/ingest/dead-letters"]  # fmt: skip
            for path in admin_only:
                assert await code(path, "admin") == 200, path
                for name in TOKENS:
                    if name != "admin":
                        assert await code(path, name) == 403, (path, name)
            # Admin only.
            assert await code("/api/alerts/audit/verify", "otis") == 403
            # Health without internals; / leads to the screens; a bearer scheme for /docs.
            ready = await http.get("/readyz")
            assert ready.status_code == 200 and ready.json() == {"status": "ready"}
            home = await http.get("/", follow_redirects=False)
            assert home.status_code in (302, 307) and home.headers["location"] == "/screen/"
            schemes = (await http.get("/openapi.json")).json()["components"]["securitySchemes"]
            assert any(s.get("scheme", "").lower() == "bearer" for s in schemes.values())
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


def test_open_alerts_loaded_at_a_start_have_their_deadline_re_armed() -> None:
    """Issue 13, item 8: an alert left open by the last run does not escalate at once when the
    backend starts again; its deadline counts from the start (and escalates after it)."""
    from backend.alerting.engine import Shared
    from backend.alerting.lifecycle import AlertBook, Deadlines
    from backend.alerting.testing import T0, Feeder

    deadlines = Deadlines(default_ms=300_000, fire_ms=180_000)
    later = T0 + 3_600_000  # the backend starts again an hour later

    def left_open(armed_from_ms: int) -> AlertBook:
        f = Feeder(shared=Shared(deadlines=deadlines))
        [fire] = f.event("c0-smoke_detector-0", 0, "alarm")
        book = AlertBook(armed_from_ms=armed_from_ms)
        book.load(fire.alert)
        return book

    book = left_open(later)
    assert book.escalations(later + 1_000, deadlines) == []
    assert book.escalations(later + 179_000, deadlines) == []
    [esc] = book.escalations(later + 180_000, deadlines)
    assert esc.action == "escalated"
    # Without the re-arming (the old behaviour) it escalates at once.
    assert left_open(0).escalations(later + 1_000, deadlines) != []


def test_a_door_left_open_does_not_raise_at_a_restart_but_after_its_limit() -> None:
    """Issue 13, item 8: the held-open timer of a door left open when the backend stopped counts
    from the start (``service.rearm_held_open``); the trapped timer is not touched."""
    import json

    from backend.alerting.engine import Engine
    from backend.alerting.lifecycle import AlertBook
    from backend.alerting.testing import T0, Feeder
    from backend.service import rearm_held_open

    door = "c0-access_controller-0"
    f = Feeder()
    f.tel(door, 0, door="open")
    docs = json.loads(json.dumps(f.engine.snapshot(set(f.engine.states))))

    def restarted(rearm: bool) -> Feeder:
        g = Feeder()
        g.engine = Engine(g.city, AlertBook())
        g.engine.restore(docs)
        if rearm:
            rearm_held_open(g.engine.states.values(), T0 + 3_600_000)
        return g

    # An hour later: without the re-arming, raised on the first tick.
    old = restarted(False)
    assert old.types(old.tick(3600)) == ["access.door_held_open"]
    g = restarted(True)
    assert g.types(g.tick(3600)) == []
    assert g.types(g.tick(3600 + 179)) == []
    assert g.types(g.tick(3600 + 180)) == ["access.door_held_open"]
