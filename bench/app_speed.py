"""The dashboard's speed in a real browser (Debian's chromium via Playwright): this tree against baseline
checkouts (``--baseline REV[,REV…]``, default ``main``: a temporary ``git worktree`` of each), side by side in
one run, the servers started in turn.

    python bench/app_speed.py [--repeats 3] [--lab cache/demo-k3] [--baseline main]

Per tree: cold load of /simplex (a fresh server process, until the plot's points are drawn); page switches
(Simplex → Merge & evaluate → Simplex through the sidebar, each until its content is drawn) and clicks (→ the
selected weights updated) at three moments: right after the first paint (three each: a user clicking on at
once), after a pause of ``PAUSE`` seconds (one: a user who read the page; the app's background warm-up runs
in such pauses, mixlab.warmup), and once the server's CPU is quiet (three each: the warm-up done); and the
websocket messages an idle page receives in 5 s (a page that polls reruns and sends deltas; one that does
not, sends none). With ``--search-trials N`` (default 3; 0 skips it), per tree and cold start: a first search
started from the Search page of a fresh server and cache (``--search-lab``, default demo-k4), pressed until
"Done", against the same search by the CLI in a fresh process and cache (imports included): the page's
progress panel polls while the job runs, and its reruns share the process with the job. And per tree and cold
start, "fresh": a fresh server on an **empty** cache (a fresh clone's first ``streamlit run app.py``), from
opening ``/`` on the lab to its Lab page's leaderboard. The lab's cache is warm for every tree: one unmeasured start per tree first fills its own
cache file (the shipped scores imported, and the tree's page summaries written beside it), as any lab opened
before has. Medians; ratios against each baseline. Nothing asserts a time.

Each load, switch and click ends when the page's run has finished (the server's ``script_finished`` message,
then a drawn frame), not when its first element shows: Streamlit's status widget appears only once a run has
taken 500 ms, so waiting for it to go away could stop the clock mid-run. Each time is split into the
server's part (the page scripts' own seconds, logged by this tree's app under $MIXLAB_PAGE_TIMES:
views.jobs.page_run) and the browser's (its main thread's busy seconds, Chrome's TaskDuration); the two
overlap (the browser draws the deltas as the script sends them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
POINTS = ".js-plotly-plot .scatterlayer .trace:first-child .points path"
PAUSE = 3.0  # seconds a user reads a page before the next click (more than mixlab.warmup.IDLE_SECONDS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tree: Path, cache: Path, times: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true"]
    env = {**os.environ, "MIXLAB_CACHE": str(cache), "MIXLAB_PAGE_TIMES": str(times)}  # (a baseline may ignore it)
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_quiet(pid: int, limit: float = 180.0) -> None:
    """Until the server has used under 0.05 s of CPU in a second: its background warm-up is done."""
    end = time.monotonic() + limit
    before = cpu_seconds(pid)
    while time.monotonic() < end:
        time.sleep(1)
        now = cpu_seconds(pid)
        if now - before < 0.05:
            return
        before = now


def own_lab(tree: Path, lab: str) -> str:
    """A shipped lab as ``tree`` ships it: a baseline cannot be asked to read a lab.toml written after it
    (demo-k3's replicates), and its own copy is the lab its users saw."""
    path = Path(lab).resolve()
    return str(tree / path.relative_to(ROOT)) if path.is_relative_to(ROOT) else lab


def server_seconds(times: Path, windows: list[tuple[float, float]], runs: int) -> float:
    """The median over ``windows`` (wall-clock spans) of the page-script seconds the server logged in each
    (views.jobs.page_run), per ``runs`` page runs; NaN for a tree that logs none (a baseline before it did)."""
    try:
        logged = [json.loads(line) for line in times.read_text().splitlines()]
    except OSError:
        return float("nan")
    return statistics.median(sum(r["wall"] for r in logged if t0 <= r["at"] <= t1) / runs for t0, t1 in windows)


class Runs:
    """The page runs the server finished, counted from its websocket messages (a ``script_finished``
    ForwardMsg ends each run): Streamlit's status widget shows only after a run has taken 500 ms, so waiting
    for it to go away passes mid-run, and a page whose first elements are drawn may still be computing the
    rest (the Merge page's tables)."""

    def __init__(self):
        self.done = 0
        self.frames: list[float] = []

    def on_frame(self, payload) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        self.frames.append(time.time())
        if isinstance(payload, bytes):
            msg = ForwardMsg.FromString(payload)
            if msg.WhichOneof("type") == "script_finished" and msg.script_finished in (
                ForwardMsg.FINISHED_SUCCESSFULLY,
                ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY,
            ):
                self.done += 1

    def wait(self, page, after: int, timeout: float = 120.0) -> None:
        """Until a run after the ``after``-th has finished and the browser has drawn a frame after it."""
        end = time.monotonic() + timeout
        while self.done <= after:
            if time.monotonic() > end:
                raise TimeoutError(f"no page run finished in {timeout:.0f} s")
            page.wait_for_timeout(5)  # (playwright dispatches the websocket events while it waits)
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def measure(browser, tree: Path, lab: str, repeats: int, cache: Path) -> dict[str, float]:
    times = cache.with_suffix(f".times-{time.time_ns()}.jsonl")
    proc, url = start(tree, cache, times)
    switches, clicks = [], []  # wall-clock windows of each, to attribute the server's page runs
    try:
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")

        def browser_cpu() -> float:
            """Seconds the page's main thread has worked so far (Chrome's TaskDuration: scripts, React,
            Plotly, style, layout, paint)."""
            return next(
                m["value"] for m in cdp.send("Performance.getMetrics")["metrics"] if m["name"] == "TaskDuration"
            )

        busy = {"switch": [], "click": []}  # the browser's main-thread seconds in each
        runs = Runs()
        frames = runs.frames
        page.on("websocket", lambda ws: ws.on("framereceived", runs.on_frame))
        t = time.perf_counter()
        page.goto(f"{url}/simplex?lab={lab}")
        page.locator(POINTS).first.wait_for(timeout=300_000)
        runs.wait(page, 0, timeout=300)
        cold = time.perf_counter() - t
        settled(page)
        clicked = 0

        def switch_and_click() -> tuple[float, float]:
            nonlocal clicked
            t, t0, n, b0 = time.perf_counter(), time.time(), runs.done, browser_cpu()
            page.get_by_role("link", name="Merge & evaluate").click()
            page.get_by_role("button", name="Evaluate").wait_for(timeout=60_000)
            runs.wait(page, n)
            n = runs.done
            page.get_by_role("link", name="Simplex explorer").click()
            page.locator(POINTS).first.wait_for(timeout=60_000)
            runs.wait(page, n)
            switch = (time.perf_counter() - t) / 2
            switches.append((t0, time.time()))
            busy["switch"].append((browser_cpu() - b0) / 2)
            settled(page)

            selected = page.get_by_text(re.compile(r"^add \d\.\d{3} · rev")).first
            before = selected.inner_text()
            box = page.locator(POINTS).nth(3 + 7 * clicked % 40).bounding_box()
            clicked += 1
            t, t0, n, b0 = time.perf_counter(), time.time(), runs.done, browser_cpu()
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_function(
                "(b) => [...document.querySelectorAll('p')].some(p => /^add \\d\\.\\d{3} · rev/.test(p.innerText)"
                " && p.innerText !== b)",
                arg=before,
                timeout=60_000,
            )
            runs.wait(page, n)
            click = time.perf_counter() - t
            clicks.append((t0, time.time()))
            busy["click"].append(browser_cpu() - b0)
            settled(page)
            return switch, click

        at_once = [switch_and_click() for _ in range(repeats)]  # a user clicking on at once
        time.sleep(PAUSE)  # a user who read the page for a moment: this tree's warm-up is under way
        paused = switch_and_click()
        wait_quiet(proc.pid)  # the warm-up done
        warm = [switch_and_click() for _ in range(repeats)]

        time.sleep(1)
        n0 = len(frames)
        time.sleep(5)
        idle = (len(frames) - n0) / 5
        page.close()
        return {
            "cold": cold,
            "switch": statistics.median(s for s, _ in at_once),
            "click": statistics.median(c for _, c in at_once),
            "switch, paused": paused[0],
            "click, paused": paused[1],
            "switch, warm": statistics.median(s for s, _ in warm),
            "click, warm": statistics.median(c for _, c in warm),
            "idle": idle,
            "server: switch": server_seconds(times, switches, 2),
            "server: click": server_seconds(times, clicks, 1),
            "browser: switch": statistics.median(busy["switch"]),
            "browser: click": statistics.median(busy["click"]),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a loaded machine: end it rather than fail the run
            proc.kill()
            proc.wait()


@contextmanager
def fresh_server(tree: Path) -> Iterator[str]:
    """A server of ``tree`` on an empty cache (and no studies), ended on exit: its URL."""
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start(tree, Path(tmp) / "cache.sqlite", Path(tmp) / "times.jsonl")
        try:
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def search_from_page(browser, tree: Path, lab: str, trials: int) -> float:
    """Seconds from pressing Search on the Search page of a fresh server (fresh cache and studies) to "Done"."""
    with fresh_server(tree) as url:
        page = browser.new_page(viewport={"width": 1440, "height": 1400})
        page.goto(f"{url}/search?lab={lab}")
        button = page.get_by_test_id("stBaseButton-primary").filter(has_text="Search")
        button.wait_for(timeout=300_000)
        settled(page)
        box = page.get_by_label("Trials", exact=True)
        box.fill(str(trials))
        box.press("Enter")
        settled(page)
        t = time.perf_counter()
        button.click()
        page.get_by_text(re.compile(r"^Done: search")).wait_for(timeout=1_800_000)
        took = time.perf_counter() - t
        page.close()
        return took


def fresh_first_page(browser, tree: Path, lab: str) -> float:
    """Seconds from opening the Lab page of a fresh server on an empty cache to its leaderboard."""
    with fresh_server(tree) as url:
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        t = time.perf_counter()
        page.goto(f"{url}/?lab={lab}")
        page.get_by_text("Leaderboard on").first.wait_for(timeout=300_000)
        took = time.perf_counter() - t
        page.close()
        return took


def search_by_cli(tree: Path, lab: str, trials: int) -> float:
    """The same search by the CLI: a fresh process and cache, imports included."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "mixlab", "search", lab, "--objective", "mean", "--sampler", "tpe"]
        env = {**os.environ, "MIXLAB_CACHE": str(Path(tmp) / "cache.sqlite")}
        t = time.perf_counter()
        subprocess.run([*cmd, "--trials", str(trials)], cwd=tree, env=env, check=True, capture_output=True)
        return time.perf_counter() - t


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--repeats", type=int, default=3, help="cold starts per tree (alternating); switches and clicks each"
    )
    ap.add_argument("--lab", default=str(ROOT / "cache" / "demo-k3"))
    ap.add_argument("--search-lab", default=str(ROOT / "cache" / "demo-k4"))
    ap.add_argument("--search-trials", type=int, default=3, help="trials of the timed first search (0: none)")
    ap.add_argument(
        "--baseline",
        default="main",
        help="the git revisions to compare with, comma-separated (each checked out in a temp worktree)",
    )
    args = ap.parse_args()
    revs = [r for r in args.baseline.split(",") if r]
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        trees = {"this tree": ROOT}
        try:
            for i, rev in enumerate(revs):
                tree = Path(tmp) / f"baseline-{i}"
                subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=ROOT, check=True,
                               capture_output=True)  # fmt: skip
                trees[f"baseline {rev}"] = tree
            caches = {name: Path(tmp) / f"cache-{i}.sqlite" for i, name in enumerate(trees)}
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
            for name, tree in trees.items():  # warm each tree's cache: one unmeasured start
                measure(browser, tree, own_lab(tree, args.lab), 1, caches[name])
            runs: dict[str, list[dict]] = {name: [] for name in trees}
            searches: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
            for _ in range(args.repeats):
                for name, tree in trees.items():
                    runs[name].append(measure(browser, tree, own_lab(tree, args.lab), 3, caches[name]))
                    runs[name][-1]["fresh"] = fresh_first_page(browser, tree, own_lab(tree, args.lab))
                    if args.search_trials:
                        lab, n = own_lab(tree, args.search_lab), args.search_trials
                        searches[name].append((search_from_page(browser, tree, lab, n), search_by_cli(tree, lab, n)))
            browser.close()
        finally:
            for tree in trees.values():
                if tree != ROOT:
                    subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    now = med["this tree"]
    cols = [
        "fresh",
        "cold",
        "switch",
        "click",
        "switch, paused",
        "click, paused",
        "switch, warm",
        "click, warm",
        "idle",
    ]
    cols += ["server: switch", "server: click", "browser: switch", "browser: click"]
    print(f"medians of {args.repeats} cold starts, lab {Path(args.lab).name}; seconds (idle: websocket messages/s)")
    print("fresh: a fresh server on an empty cache, / to the Lab page's leaderboard; cold: a fresh server on the")
    print("warm cache, /simplex to its points and the run's end")
    print(f"switch/click: 3 each right after the first paint; paused: one after a {PAUSE:.0f} s pause; warm: 3 each")
    print("once the server's CPU is quiet (its warm-up done); server: the page scripts' own seconds in a switch")
    print("(per page) and a click, all moments pooled (what is left of each is the browser's, the websocket's and")
    print("Streamlit's own); nan: a tree that does not log them. browser: the page's main-thread seconds in each")
    print("(Chrome's TaskDuration: scripts, React, Plotly, style, layout, paint)")
    print(f"{'tree':<28}" + "".join(f"{c:>17}" for c in cols))
    for name, r in med.items():
        print(f"{name:<28}" + "".join(f"{r[c]:>17.2f}" for c in cols))
    for name, base in med.items():
        if name != "this tree":
            ratio = f"this ÷ {name.split()[-1]}"
            print(f"{ratio:<28}" + "".join(f"{now[c] / base[c]:>17.2f}" for c in cols if c != "idle"))
    if args.search_trials:
        print(
            f"\na first search ({args.search_trials} TPE trials, mean, {Path(args.search_lab).name}), fresh server and cache;"
        )
        print("the same search by the CLI, fresh process and cache, imports included; medians, seconds")
        print(f"{'tree':<28}{'from the page':>17}{'by the CLI':>17}{'page ÷ CLI':>17}")
        for name, pairs in searches.items():
            page_s, cli_s = (statistics.median(x[i] for x in pairs) for i in (0, 1))
            print(f"{name:<28}{page_s:>17.2f}{cli_s:>17.2f}{page_s / cli_s:>17.2f}")


if __name__ == "__main__":
    main()
