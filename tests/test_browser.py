"""The app in a real headless browser: Debian's chromium driven by Playwright (never `playwright
install`). Starts `streamlit run app.py`, clicks a point on the ternary plot, checks the selected
weights change, and runs an on-demand evaluation to completion. Prints the load and click timings."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run installs Debian's chromium package")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    port = _free_port()
    env = {**os.environ, "MIXLAB_CACHE": str(tmp_path / "cache.sqlite")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=20)


def _settled(page) -> None:
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=90_000)


def test_click_a_point_then_evaluate_on_demand(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        start = time.time()
        page.goto(f"{server}/simplex")
        selected = page.get_by_text(re.compile(r"^add \d\.\d{3} · rev")).first
        expect(selected).to_be_visible(timeout=90_000)
        page.locator(".js-plotly-plot .scatterlayer .trace .points path").first.wait_for(timeout=60_000)
        _settled(page)
        cold = time.time() - start
        before = selected.inner_text()
        assert before == "add 0.333 · rev 0.333 · sort 0.333"

        # click the proxy point at the 'sort' vertex-adjacent grid point: any proxy point will do
        points = page.locator(".js-plotly-plot .scatterlayer .trace:first-child .points path")
        target = points.nth(5)
        target.scroll_into_view_if_needed()
        box = target.bounding_box()
        t0 = time.time()
        page.mouse.click(
            box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        )  # as a person clicks: Plotly listens on its drag layer
        expect(selected).not_to_have_text(before, timeout=30_000)
        click_seconds = time.time() - t0
        after = selected.inner_text()
        weights = [float(x) for x in re.findall(r"\d\.\d{3}", after)]
        assert abs(sum(weights) - 1) < 2e-3 and weights != [0.333, 0.333, 0.333]
        page.screenshot(path=str(tmp_path / "simplex_after_click.png"))

        # an evaluation that is not cached: TIES at the clicked mixture, on the Merge & evaluate page
        page.get_by_role("link", name="Merge & evaluate").click()
        page.get_by_role("button", name="Evaluate").wait_for(timeout=60_000)
        _settled(page)
        page.get_by_role("combobox", name="Merge method").click()
        page.get_by_role("option", name="ties", exact=True).click()
        _settled(page)
        page.get_by_role("button", name="Evaluate").click()
        expect(page.get_by_text(re.compile(r"^Evaluated ties"))).to_be_visible(timeout=180_000)
        _settled(page)
        expect(page.get_by_role("button", name="Scores as CSV")).to_be_visible(timeout=30_000)
        page.screenshot(path=str(tmp_path / "merge_after_eval.png"), full_page=True)
        browser.close()
    print(
        f"\ncold load of the simplex page: {cold:.2f} s; cached click → selected weights updated: {click_seconds:.2f} s"
    )
