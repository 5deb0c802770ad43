"""The supervision API on a generated past: who sees what (a district bureau, the city bureau,
a property company, another department, no token), publishing, exports (CSV, Excel), the
public disclosure without a token, and the OpenAPI document."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import date

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from anju.registry import CityIndex, load_registry, sample_registry_path
from backend.api import AppState, create_app
from backend.api.deps import Tokens
from backend.api.routes.supervision import covers
from backend.config import TokenSpec
from backend.db.migrate import migrate
from backend.metrics import BackendMetrics
from backend.store import AlertStore
from backend.supervision.history import write_history
from tests.conftest import DatabaseCopies

pytestmark = pytest.mark.integration
MONTH = "2026-10"
TOKENS = [
    TokenSpec(name="admin", audience="admin", token="t-admin"),
    TokenSpec(name="nanhu bureau", audience="construction", scope="330402", token="t-nh"),
    TokenSpec(name="city bureau", audience="construction", scope="330400", token="t-city"),
    TokenSpec(name="greentown", audience="property", scope="org-greentown-jx", token="t-gt"),
    TokenSpec(name="vanke", audience="property", scope="org-vanke-jx", token="t-vk"),
    TokenSpec(name="fire", audience="fire", scope="330402", token="t-fire"),
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _past(url: str) -> None:
    """Migrated, with 45 days of generated past up to 2026-11-10 (built once, copied per test)."""
    migrate(url)
    city = CityIndex(load_registry(sample_registry_path()))
    async with AsyncConnectionPool(url, min_size=1, max_size=4, open=False) as pool:
        await write_history(pool, city, days=45, end=date(2026, 11, 10))


@pytest.fixture
async def api(db_copies: DatabaseCopies) -> AsyncIterator[httpx.AsyncClient]:
    db_url = await db_copies.copy("supervision_api", _past)
    city = CityIndex(load_registry(sample_registry_path()))
    async with AsyncConnectionPool(db_url, min_size=1, max_size=4, open=False) as pool:
        state = AppState(
            AlertStore(pool), BackendMetrics(), None, tokens=Tokens.of(TOKENS), city=city
        )
        app = create_app(state)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def test_bureau_scopes_cover_districts() -> None:
    assert covers("330402", "330402") and not covers("330402", "330411")
    assert covers("330400", "330411") and not covers("330400", "330102")
    assert covers("330000", "330102") and not covers("320000", "330102")


async def test_a_district_bureau_sees_its_district_only(api: httpx.AsyncClient) -> None:
    q = {"level": "community", "month": MONTH}
    r = await api.get("/api/supervision/figures", params=q, headers=bearer("t-nh"))
    assert r.status_code == 200
    assert [x["key"] for x in r.json()["rows"]] == ["jx-nh-0001"]
    r = await api.get("/api/supervision/figures", params=q, headers=bearer("t-city"))
    assert sorted(x["key"] for x in r.json()["rows"]) == ["jx-js-0001", "jx-nh-0001", "jx-xz-0001"]
    # another district's community: not found in this scope
    r = await api.get("/api/supervision/scorecards/jx-xz-0001", params={"month": MONTH},
                      headers=bearer("t-nh"))  # fmt: skip
    assert r.status_code == 404
    r = await api.get("/api/supervision/figures", params={**q, "key": "jx-xz-0001"},
                      headers=bearer("t-nh"))  # fmt: skip
    assert r.status_code == 404
    # company figures in a district bureau's view cover that district's communities only
    r = await api.get("/api/supervision/figures", params={"month": MONTH}, headers=bearer("t-nh"))
    assert [x["key"] for x in r.json()["rows"]] == ["org-greentown-jx"]


async def test_a_company_sees_its_own_only(api: httpx.AsyncClient) -> None:
    r = await api.get("/api/supervision/figures", params={"month": MONTH}, headers=bearer("t-gt"))
    assert [x["key"] for x in r.json()["rows"]] == ["org-greentown-jx"]
    r = await api.get("/api/supervision/figures", params={"month": MONTH, "key": "org-vanke-jx"},
                      headers=bearer("t-gt"))  # fmt: skip
    assert r.status_code == 404
    r = await api.get("/api/supervision/credit/org-vanke-jx", params={"month": MONTH},
                      headers=bearer("t-gt"))  # fmt: skip
    assert r.status_code == 404
    r = await api.get("/api/supervision/credit/org-greentown-jx", params={"month": MONTH},
                      headers=bearer("t-gt"))  # fmt: skip
    assert r.status_code == 200
    body = r.json()
    assert body["org_id"] == "org-greentown-jx" and body["lines"] and "grade" in body
    r = await api.get("/api/supervision/credit", params={"month": MONTH}, headers=bearer("t-gt"))
    assert [x["org_id"] for x in r.json()["rows"]] == ["org-greentown-jx"]
    r = await api.get("/api/supervision/figures", params={"level": "maintenance"},
                      headers=bearer("t-gt"))  # fmt: skip
    assert r.status_code == 403
    r = await api.get("/api/supervision/scorecards/jx-xz-0001", params={"month": MONTH},
                      headers=bearer("t-gt"))  # fmt: skip
    assert r.status_code == 404
    r = await api.post("/api/supervision/credit/publish", params={"month": MONTH},
                       headers=bearer("t-gt"))  # fmt: skip
    assert r.status_code == 403


async def test_other_tokens_and_no_token(api: httpx.AsyncClient) -> None:
    r = await api.get("/api/supervision/figures", headers=bearer("t-fire"))
    assert r.status_code == 403
    r = await api.get("/api/supervision/figures")
    assert r.status_code == 401
    r = await api.get("/api/supervision/credit")
    assert r.status_code == 401


async def test_publish_then_public_and_lists(api: httpx.AsyncClient) -> None:
    r = await api.get("/api/supervision/public")
    assert r.status_code == 200 and r.json()["published"] is False
    r = await api.post("/api/supervision/credit/publish", params={"month": MONTH},
                       headers=bearer("t-nh"))  # fmt: skip
    assert r.status_code == 403  # a district bureau does not publish for the city
    r = await api.post("/api/supervision/credit/publish", params={"month": MONTH},
                       headers=bearer("t-city"))  # fmt: skip
    assert r.status_code == 200 and r.json()["companies"] == 3
    live = await api.get("/api/supervision/credit", params={"month": MONTH},
                         headers=bearer("t-admin"))  # fmt: skip
    pub = await api.get("/api/supervision/published", params={"month": MONTH},
                        headers=bearer("t-admin"))  # fmt: skip
    assert [(x["org_id"], x["score"], x["grade"]) for x in pub.json()["rows"]] == [
        (x["org_id"], x["score"], x["grade"]) for x in live.json()["rows"]
    ]
    r = await api.get("/api/supervision/public")  # no token
    body = r.json()
    assert body["published"] and body["month"] == "2026-10-01"
    row = body["rows"][0]
    assert set(row) == {"org_name", "grade", "score", "list", "alerts", "ack_median_s",
                        "resolve_median_s", "escalated", "overdue", "device_online_ratio",
                        "trapped", "fire_false_alarms"}  # fmt: skip
    text = r.text
    for private in ("device_id", "alert_id", "jx-nh-0001", "evidence", "by", "lines"):
        assert f'"{private}' not in text
    lists = await api.get("/api/supervision/lists", params={"month": MONTH},
                          headers=bearer("t-admin"))  # fmt: skip
    assert lists.json()["source"] == "published"
    for entry in lists.json()["rows"]:
        assert entry["list"] in ("red", "black") and entry["reasons"]


async def test_exports_of_every_table(api: httpx.AsyncClient) -> None:
    from openpyxl import load_workbook  # type: ignore[import-untyped]

    await api.post("/api/supervision/credit/publish", params={"month": MONTH},
                   headers=bearer("t-admin"))  # fmt: skip
    paths = [
        "/api/supervision/figures",
        "/api/supervision/alerts-by-type",
        "/api/supervision/credit",
        "/api/supervision/credit/org-greentown-jx",
        "/api/supervision/published",
        "/api/supervision/lists",
        "/api/supervision/scorecards",
        "/api/supervision/scorecards/jx-nh-0001",
        "/api/supervision/public",
    ]
    for path in paths:
        csv = await api.get(path, params={"month": MONTH, "format": "csv"},
                            headers=bearer("t-admin"))  # fmt: skip
        assert csv.status_code == 200, (path, csv.text)
        assert csv.headers["content-type"].startswith("text/csv")
        text = csv.content.decode("utf-8-sig")
        assert len(text.splitlines()) >= 2, path  # a header and rows
        xl = await api.get(path, params={"month": MONTH, "format": "xlsx"},
                           headers=bearer("t-admin"))  # fmt: skip
        assert xl.status_code == 200
        ws = load_workbook(io.BytesIO(xl.content)).active
        assert ws.max_row == len(text.splitlines()), path


async def test_scorecard_has_titles_evidence_and_trend(api: httpx.AsyncClient) -> None:
    r = await api.get("/api/supervision/scorecards/jx-nh-0001", params={"month": MONTH},
                      headers=bearer("t-gt"))  # fmt: skip
    card = r.json()
    assert card["name"] == "梅湾花园"
    assert [t["name"] for t in card["titles"]] == ["温馨家园", "品质楼宇"]
    for t in card["titles"]:
        for ln in t["lines"]:
            assert len(ln["trend"]) == 6 and ln["trend"][-1]["month"] == "2026-10-01"
            assert ln["passed"] or ln["evidence"] or ln["figure"] == "device_online_ratio"


async def test_openapi_lists_the_supervision_routes(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]
    for p in ("/api/supervision/figures", "/api/supervision/public",
              "/api/supervision/credit/{org_id}", "/api/supervision/lists"):  # fmt: skip
        assert p in paths
