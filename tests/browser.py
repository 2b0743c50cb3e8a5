"""Headless Chromium for tests: Debian's ``/usr/bin/chromium`` driven by Python playwright.

``playwright install`` cannot download browsers here, so the system build is
launched through ``executable_path``, with the switches that keep it from
reaching out to the network on its own.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Page, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    if path is None:
        raise RuntimeError("chromium is not installed: apt-get install chromium (make test does)")
    return path


@asynccontextmanager
async def browser_page(url: str | None = None) -> AsyncIterator[Page]:
    """A fresh page in a fresh headless browser, at ``url`` when given (so page scripts run same-origin)."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=ARGS)
        try:
            page = await browser.new_page()
            if url is not None:
                await page.goto(url)
            yield page
        finally:
            await browser.close()
