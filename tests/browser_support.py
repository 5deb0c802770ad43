"""Browser tests on Debian's Chromium through Playwright's async API (no browser download).

The backend under test runs in the test's event loop (``tests.support.running_backend``), so
the browser is driven with Playwright's *async* API in that same loop. Small surface::

    from tests.browser_support import chromium, new_page, snap

    async with chromium() as browser, new_page(browser) as page:
        await page.goto(f"http://127.0.0.1:{port}/screen/")
        await expect(page.locator("#banner")).to_be_hidden(timeout=5000)
        await snap(page, "control-room")   # test-artifacts/screens/control-room.png

- :func:`chromium_executable` finds the browser: ``$ANJU_CHROMIUM`` or ``chromium`` on PATH;
  missing, the test FAILS saying ``apt-get install chromium`` (never a skip).
- :func:`chromium` launches it headless (1920x1080 by default, a control room's wall screen),
  with autoplay allowed so an alarm's WebAudio can start without a click.
- :func:`new_page` opens a page in a fresh context (its own sessionStorage) and fails the test
  at the end if the page threw an uncaught JavaScript error.
- :func:`snap` saves a screenshot under ``test-artifacts/screens/`` (ignored by git).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, ViewportSize, async_playwright

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screens"
WALL: ViewportSize = {"width": 1920, "height": 1080}


def chromium_executable() -> str:
    """The Chromium to drive: ``$ANJU_CHROMIUM`` or ``chromium`` on PATH, else fail the test."""
    path = os.environ.get("ANJU_CHROMIUM") or shutil.which("chromium")
    if not path or not Path(path).exists():
        pytest.fail(
            "browser tests need Debian's Chromium: apt-get install chromium "
            "(or point ANJU_CHROMIUM at a Chromium binary)",
            pytrace=False,
        )
    return path


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium for the block; closed at the end."""
    executable = chromium_executable()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--autoplay-policy=no-user-gesture-required", "--mute-audio"],
        )
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def new_page(
    browser: Browser, *, locale: str = "zh-CN", viewport: ViewportSize | None = None
) -> AsyncIterator[Page]:
    """A page in a fresh context (own storage); uncaught page errors fail the test at the end."""
    context = await browser.new_context(locale=locale, viewport=viewport or WALL)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        await context.close()
    if errors:
        pytest.fail(f"the page threw: {errors}", pytrace=False)


async def snap(page: Page, name: str) -> Path:
    """Save a screenshot of ``page`` as ``test-artifacts/screens/{name}.png``; its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    await page.screenshot(path=str(path))
    return path


__all__ = ["ARTIFACTS", "WALL", "chromium", "chromium_executable", "new_page", "snap"]
