"""A real headless Chromium (Debian's package, driven by Playwright) on the page served by a
gateway of the shipped shapes model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("SAMSERVE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Screenshots land here (SAMSERVE_TEST_ARTIFACTS, default test-artifacts/)."""
    out = Path(os.environ.get("SAMSERVE_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def browser():
    """Module-scoped: Playwright's sync API runs an event loop on the main thread while it
    lives, and the tests after these call asyncio.run."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: ./scripts/setup.sh --browser installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser, trained_gateway):
    # bypass_csp: Playwright's waits evaluate script text, which the page's policy forbids
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.errors = errors  # what the page logged as errors: none, unless a test expects one
    pg.goto(trained_gateway.http_url + "/")
    pg.wait_for_function("document.querySelector('#model').options.length > 0")
    yield pg
    context.close()
    assert errors == [], errors
