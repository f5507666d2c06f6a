"""A real browser (Debian's Chromium driven by Playwright) on the Dagster UI after a real run.

Screenshots are kept in test-artifacts/screenshots/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator

import dagster as dg
import pytest

from vae_pipeline.definitions import defs
from vae_pipeline_tests.e2e.servers import ARTIFACTS, DagsterDev
from vae_pipeline_tests.helpers import PIPELINE_ASSETS
from vae_pipeline_tests.variants import TINY_VARIANT

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Headless, and nothing that would reach the internet (there is none in CI).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]
SHOTS = ARTIFACTS / "screenshots"
# The model assets, partitioned by variant: their graph node shows the share of partitions materialized
# ("100% filled") where an unpartitioned one shows "Materialized".
PARTITIONED = {asset for asset in PIPELINE_ASSETS if defs.resolve_assets_def(dg.AssetKey(asset)).partitions_def is not None}
SOME_FILLED = re.compile(r"^[1-9][0-9]*% filled$")  # at least one variant materialized (more may exist than were run)


@pytest.fixture(scope="module")
def page(first_run: str) -> Iterator:  # noqa: ANN001 - playwright's Page
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.fail("Chromium is missing: apt-get install chromium (CI's .ci/run does)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=60_000)
        try:
            # Large enough that the graph draws full nodes (zoomed out, it elides long names).
            page = browser.new_page(viewport={"width": 2400, "height": 3600})  # the whole graph (5 groups) on screen
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def _dismiss_welcome(page) -> None:  # noqa: ANN001
    """A fresh instance greets the first visitor with a newsletter dialog; skip it if it is there."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=5_000)
    except Exception:  # noqa: BLE001 - playwright's TimeoutError: no dialog this time
        return
    skip.click()


def test_the_asset_graph_shows_every_asset(page, dagster_dev: DagsterDev) -> None:  # noqa: ANN001
    page.goto(f"{dagster_dev.url}/asset-groups", wait_until="domcontentloaded")
    page.get_by_text("training", exact=True).first.wait_for(state="visible")
    _dismiss_welcome(page)
    page.keyboard.press("Alt+e")  # the graph's "Expand all groups" shortcut
    assert PARTITIONED and PARTITIONED < PIPELINE_ASSETS
    try:
        for asset in sorted(PIPELINE_ASSETS):
            # The asset's node: the innermost box with its name and its rows ("Latest event", ...).
            node = page.locator("div").filter(has=page.get_by_text(asset, exact=True)).filter(has_text="Latest event").last
            status = node.get_by_text(SOME_FILLED) if asset in PARTITIONED else node.get_by_text("Materialized", exact=True)
            status.first.wait_for(state="visible")
    finally:
        page.screenshot(path=str(SHOTS / "asset_graph.png"))


def test_the_prior_samples_page_shows_the_picture(page, dagster_dev: DagsterDev) -> None:  # noqa: ANN001
    # The tiny variant's partition, as a user picks it in the asset's Partitions tab.
    page.goto(f"{dagster_dev.url}/assets/prior_samples?view=partitions&partition={TINY_VARIANT}", wait_until="domcontentloaded")
    _dismiss_welcome(page)
    page.get_by_text(TINY_VARIANT, exact=True).first.wait_for(state="visible")
    # The partition's latest materialization: its metadata table shows markdown behind a button; the PNG is a data URI in it.
    row = page.locator("tr", has_text="prior_samples").filter(has_text="Show Markdown").first
    row.get_by_text("Show Markdown").click()
    image = page.get_by_role("dialog").locator('img[src^="data:image/png"]').first
    image.wait_for(state="visible")
    image.scroll_into_view_if_needed()
    box = image.bounding_box()
    assert box is not None and box["width"] > 50 and box["height"] > 50
    assert image.evaluate("img => img.complete && img.naturalWidth > 0")  # the PNG decoded
    page.screenshot(path=str(SHOTS / "prior_samples_asset.png"), full_page=True)
    image.screenshot(path=str(SHOTS / "prior_samples_image.png"))
