"""The supervision pages in a real browser (Debian's Chromium through Playwright): the bureau's
ranking, a company's explained score, a community's scorecard, the lists, the public page
without a token; a district bureau's and a company's token see only their own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date

import pytest
import uvicorn
from playwright.async_api import Page, expect
from psycopg_pool import AsyncConnectionPool

from anju.registry import CityIndex, load_registry, sample_registry_path
from anju.servers import free_port
from backend.api import AppState, create_app
from backend.api.deps import Tokens
from backend.config import TokenSpec
from backend.db.migrate import migrate
from backend.metrics import BackendMetrics
from backend.store import AlertStore
from backend.supervision import load_rules, publish, refresh, sync_registry
from backend.supervision.history import write_history
from tests.browser_support import chromium, new_page, snap
from tests.conftest import DatabaseCopies

pytestmark = pytest.mark.integration
MONTH = "2026-10"
TOKENS = [
    TokenSpec(name="city bureau", audience="construction", scope="330400", token="t-city"),
    TokenSpec(name="nanhu bureau", audience="construction", scope="330402", token="t-nh"),
    TokenSpec(name="vanke", audience="property", scope="org-vanke-jx", token="t-vk"),
]


async def _published(url: str) -> None:
    """Migrated, 40 days of generated past up to 2026-11-03, October published (built once,
    copied per test)."""
    migrate(url)
    city = CityIndex(load_registry(sample_registry_path()))
    async with AsyncConnectionPool(url, min_size=1, max_size=4, open=False) as pool:
        await write_history(pool, city, days=40, end=date(2026, 11, 3))
        async with pool.connection() as conn:
            await sync_registry(conn, city, today=date(2026, 11, 3))
            await refresh(conn)
            await publish(conn, date(2026, 10, 1), load_rules(), by="test")


@pytest.fixture
async def site(db_copies: DatabaseCopies) -> AsyncIterator[str]:
    db_url = await db_copies.copy("supervision_browser", _published)
    city = CityIndex(load_registry(sample_registry_path()))
    async with AsyncConnectionPool(db_url, min_size=1, max_size=4, open=False) as pool:
        state = AppState(
            AlertStore(pool), BackendMetrics(), None, tokens=Tokens.of(TOKENS), city=city
        )
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning")
        )
        task = asyncio.create_task(server.serve(), name="supervision-site")
        try:
            for _ in range(400):  # up to 20 s
                if server.started or task.done():
                    break
                await asyncio.sleep(0.05)
            assert server.started, "the API did not start"
            yield f"http://127.0.0.1:{port}/screen/supervision"
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 20)


async def login(page: Page, base: str, token: str) -> None:
    await page.goto(f"{base}/index.html?month={MONTH}")
    await page.evaluate("t => sessionStorage.setItem('anju.token', t)", token)


async def ready(page: Page) -> None:
    await expect(page.locator("body")).to_have_attribute("data-ready", "1", timeout=20_000)


async def test_bureau_ranking_company_file_scorecard_and_lists(site: str) -> None:
    async with chromium() as browser, new_page(browser) as page:
        await login(page, site, "t-city")
        await page.goto(f"{site}/index.html?month={MONTH}")
        await ready(page)
        rows = page.locator("#ranking tbody tr")
        await expect(rows).to_have_count(3)
        await expect(page.locator("#ruleset")).to_contain_text("非任何城市的正式政策")
        await expect(page.locator("#communities tbody tr")).to_have_count(3)
        await snap(page, "supervision-ranking")
        # a company's file: every line explained, evidence for what cost points
        await page.locator("a.company", has_text="万科").click()
        await ready(page)
        await expect(page.locator("#name")).to_have_text("万科物业服务嘉兴分公司")
        await expect(page.locator("#score .grade")).to_be_visible()
        await expect(page.locator("#lines tbody tr")).to_have_count(len(load_rules().rules.lines))
        await expect(page.locator("#published")).to_contain_text("已于")
        await expect(page.locator("#days tbody tr")).to_have_count(31)
        await snap(page, "supervision-company")
        await page.goto(f"{site}/community.html?id=jx-nh-0001&month={MONTH}")
        await ready(page)
        await expect(page.locator("#titles h2")).to_have_count(2)
        await expect(page.locator("#titles")).to_contain_text("温馨家园")
        await snap(page, "supervision-scorecard")
        await page.goto(f"{site}/lists.html?month={MONTH}")
        await ready(page)
        await expect(page.locator("#source")).to_contain_text("已发布")
        await snap(page, "supervision-lists")


async def test_public_page_needs_no_token(site: str) -> None:
    async with chromium() as browser, new_page(browser) as page:
        await page.goto(f"{site}/public.html")  # no token stored
        await ready(page)
        await expect(page.locator("#month-shown")).to_have_text(MONTH)
        await expect(page.locator("#month")).to_have_value(MONTH)  # the latest published
        await expect(page.locator("#companies tbody tr")).to_have_count(3)
        text = await page.locator("main").inner_text()
        assert "jx-nh-0001" not in text and "elev" not in text
        await snap(page, "supervision-public")


async def test_tokens_see_only_their_own(site: str) -> None:
    async with chromium() as browser, new_page(browser) as page:
        await login(page, site, "t-nh")
        await page.goto(f"{site}/index.html?month={MONTH}")
        await ready(page)
        await expect(page.locator("#communities tbody tr")).to_have_count(1)
        await expect(page.locator("#ranking tbody tr")).to_have_count(1)  # Nanhu's company
        await page.goto(f"{site}/community.html?id=jx-xz-0001&month={MONTH}")
        await expect(page.locator("body")).to_have_attribute("data-ready", "error")
        await expect(page.locator("#error")).to_contain_text("404")
    async with chromium() as browser, new_page(browser) as page:
        await login(page, site, "t-vk")
        await page.goto(f"{site}/company.html?org=org-greentown-jx&month={MONTH}")
        await expect(page.locator("body")).to_have_attribute("data-ready", "error")
        await expect(page.locator("#error")).to_contain_text("404")
        await page.goto(f"{site}/company.html?org=org-vanke-jx&month={MONTH}")
        await ready(page)
        await expect(page.locator("#lines tbody tr").first).to_be_visible()
