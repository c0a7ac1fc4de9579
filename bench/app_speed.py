"""The dashboard's speed in a real browser (Debian's chromium via Playwright): this tree against a baseline
checkout (``--baseline REV``, default ``main``: a temporary ``git worktree`` of it), side by side in one run,
the two servers started alternately.

    python bench/app_speed.py [--repeats 3] [--lab cache/demo-k3] [--baseline main]

Per tree: cold load of /simplex (a fresh server process, until the plot's points are drawn), a warm page
switch (Simplex → Merge & evaluate → Simplex through the sidebar, each until its content is drawn), click →
the selected weights updated, and the websocket messages an idle page receives in 5 s (a page that polls
reruns and sends deltas; one that does not, sends none). The lab's cache is warm for both: one unmeasured
start per tree first fills its own cache file (the shipped scores imported, and this tree's page summaries
written beside it), as any lab opened before has. Medians; ratios against the baseline. Nothing asserts a
time.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
POINTS = ".js-plotly-plot .scatterlayer .trace:first-child .points path"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tree: Path, cache: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true"]
    env = {**os.environ, "MIXLAB_CACHE": str(cache)}
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}"


def settled(page) -> None:
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=120_000)


def measure(browser, tree: Path, lab: str, repeats: int, cache: Path) -> dict[str, float]:
    proc, url = start(tree, cache)
    try:
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        frames = []
        page.on("websocket", lambda ws: ws.on("framereceived", lambda _: frames.append(time.time())))
        t = time.perf_counter()
        page.goto(f"{url}/simplex?lab={lab}")
        page.locator(POINTS).first.wait_for(timeout=300_000)
        settled(page)
        cold = time.perf_counter() - t

        switches, clicks = [], []
        for i in range(repeats):
            t = time.perf_counter()
            page.get_by_role("link", name="Merge & evaluate").click()
            page.get_by_role("button", name="Evaluate").wait_for(timeout=60_000)
            settled(page)
            page.get_by_role("link", name="Simplex explorer").click()
            page.locator(POINTS).first.wait_for(timeout=60_000)
            settled(page)
            switches.append((time.perf_counter() - t) / 2)

            selected = page.get_by_text(re.compile(r"^add \d\.\d{3} · rev")).first
            before = selected.inner_text()
            box = page.locator(POINTS).nth(3 + 7 * i).bounding_box()
            t = time.perf_counter()
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_function(
                "(b) => [...document.querySelectorAll('p')].some(p => /^add \\d\\.\\d{3} · rev/.test(p.innerText)"
                " && p.innerText !== b)",
                arg=before,
                timeout=60_000,
            )
            clicks.append(time.perf_counter() - t)
            settled(page)

        time.sleep(1)
        n0 = len(frames)
        time.sleep(5)
        idle = (len(frames) - n0) / 5
        page.close()
        return {
            "cold": cold,
            "switch": statistics.median(switches),
            "click": statistics.median(clicks),
            "idle": idle,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a loaded machine: end it rather than fail the run
            proc.kill()
            proc.wait()


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--repeats", type=int, default=3, help="cold starts per tree (alternating); switches and clicks each"
    )
    ap.add_argument("--lab", default=str(ROOT / "cache" / "demo-k3"))
    ap.add_argument(
        "--baseline", default="main", help="the git revision to compare with (checked out in a temp worktree)"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        base_tree = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), args.baseline], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
        try:
            trees = {"this tree": ROOT, f"baseline ({args.baseline})": base_tree}
            caches = {name: Path(tmp) / f"cache-{i}.sqlite" for i, name in enumerate(trees)}
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
            for name, tree in trees.items():  # warm each tree's cache: one unmeasured start
                measure(browser, tree, args.lab, 1, caches[name])
            runs: dict[str, list[dict]] = {name: [] for name in trees}
            for _ in range(args.repeats):
                for name, tree in trees.items():
                    runs[name].append(measure(browser, tree, args.lab, 3, caches[name]))
            browser.close()
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, capture_output=True)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    now, base = med["this tree"], med[f"baseline ({args.baseline})"]
    print(f"medians of {args.repeats} cold starts (3 switches and clicks each), lab {Path(args.lab).name}")
    print(f"{'tree':<26} {'cold /simplex s':>15} {'page switch s':>14} {'click s':>8} {'idle msgs/s':>12}")
    for name, r in med.items():
        print(f"{name:<26} {r['cold']:>15.2f} {r['switch']:>14.2f} {r['click']:>8.2f} {r['idle']:>12.1f}")
    print(
        f"{'ratio (this ÷ baseline)':<26} {now['cold'] / base['cold']:>15.2f} {now['switch'] / base['switch']:>14.2f} "
        f"{now['click'] / base['click']:>8.2f}"
    )


if __name__ == "__main__":
    main()
