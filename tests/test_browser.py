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


@pytest.fixture(scope="module")
def server_cache(tmp_path_factory) -> Path:
    """The app server's cache (MIXLAB_CACHE), shared by the module's tests as they share one server. What one
    test adds (a TIES evaluation, a search's studies and scores) another does not assert on: the results-page
    test reads its expectations from this same cache, as the pages do."""
    return tmp_path_factory.mktemp("server") / "cache.sqlite"


@pytest.fixture(scope="module")
def server(server_cache):
    """One `streamlit run app.py` for the module (each test opens its own browser, so its own session): a
    server's start-up and warm-up are paid once, not once per test."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run installs Debian's chromium package")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    port = _free_port()
    env = {**os.environ, "MIXLAB_CACHE": str(server_cache)}
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
    log = proc.communicate(timeout=20)[0]
    assert "Inotify" not in log, "the committed config must keep Streamlit's file watcher off the .venv"


def slider_values(page) -> list[float]:
    """The weight sliders' values as drawn (each thumb shows its value)."""
    return [float(t) for t in page.locator("[data-testid='stSliderThumbValue']").all_inner_texts()]


def pytest_approx(values):
    return pytest.approx(values, abs=0.006)  # sliders show two decimals; the text shows three


def expect_sliders(page, weights, timeout: float = 90) -> None:
    """Wait for the weight sliders to show ``weights``: Streamlit draws widgets from lazily loaded chunks
    (skeletons for seconds after the status widget goes under load), so wait for the value itself."""
    deadline = time.monotonic() + timeout
    shown: list[float] = []
    while time.monotonic() < deadline:
        try:
            shown = slider_values(page)
        except ValueError:  # a thumb drawn before its value
            shown = []
        if len(shown) == len(weights) and shown == pytest_approx(weights):
            return
        time.sleep(0.2)
    assert shown == pytest_approx(weights), (shown, weights)


def _settled(page) -> None:
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=90_000)


def test_click_a_point_then_evaluate_on_demand(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        hosts = set()
        page.on("request", lambda r: hosts.add(re.sub(r"^\w+://([^/:]+).*", r"\1", r.url)))
        start = time.time()
        page.goto(f"{server}/simplex")
        selected = page.get_by_text(re.compile(r"^add \d\.\d{3} · rev")).first
        expect(selected).to_be_visible(timeout=90_000)
        page.locator(".js-plotly-plot .scatterlayer .trace .points path").first.wait_for(timeout=60_000)
        before = "add 0.333 · rev 0.333 · sort 0.333"
        expect(selected).to_have_text(before, timeout=60_000)
        _settled(page)  # the plot takes clicks once its script run is over
        cold = time.time() - start

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
        _settled(page)
        page.wait_for_url(re.compile(r"[?&]w="), timeout=30_000)  # the view is in the address bar

        # the clicked mixture is the one every page shows: the Merge page's sliders, after a page switch
        page.get_by_role("link", name="Merge & evaluate").click()
        page.get_by_role("button", name="Evaluate").wait_for(timeout=60_000)
        expect_sliders(page, weights)
        page.wait_for_url(re.compile(r"[?&]w="), timeout=30_000)  # kept across the sidebar navigation
        page.reload()  # a reload (or the link, shared) opens the same view
        page.get_by_role("button", name="Evaluate").wait_for(timeout=60_000)
        expect_sliders(page, weights)

        # an evaluation that is not cached: TIES at the clicked mixture
        page.get_by_role("combobox", name="Merge method").click()
        page.get_by_role("option", name="ties", exact=True).click()
        _settled(page)
        page.get_by_role("button", name="Evaluate").click()
        expect(page.get_by_text(re.compile(r"^Done: ties"))).to_be_visible(timeout=180_000)
        _settled(page)
        expect(page.get_by_role("button", name="Scores as CSV")).to_be_visible(timeout=30_000)
        page.screenshot(path=str(tmp_path / "merge_after_eval.png"), full_page=True)
        browser.close()
    assert hosts <= {"127.0.0.1", "localhost"}, f"requests to other hosts: {hosts - {'127.0.0.1', 'localhost'}}"
    print(
        f"\ncold load of the simplex page: {cold:.2f} s; cached click → selected weights updated: {click_seconds:.2f} s"
    )


_MARKS = """() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(p => p._fullData
    .filter(t => ['best under the proxy', 'best trained mixture'].includes(t.name))
    .map(t => [t.name, Array.from({length: Object.keys(t.customdata[0]).length}, (_, i) => t.customdata[0][i])]))"""
_PICK = """() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(p => p._fullData
    .filter(t => ["the proxy's pick", 'best trained mixture'].includes(t.name)).map(t => [t.name, t.text[0]]))"""
# every table on the page as its rows of cell texts (Streamlit's grid keeps an accessible copy of what it draws)
_TABLES = """() => [...document.querySelectorAll('[data-testid=stDataFrame]')].map(d => [...d.querySelectorAll(
    '[role=row]')].map(r => [...r.querySelectorAll('[role=gridcell],[role=columnheader]')].map(c => c.innerText)))"""
SCORE = re.compile(r"^[+-]?\d+\.\d{3}$")  # a score alone: no interval
WITH_CI = re.compile(r"^\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]( · n=\d+)?$")  # a score with its 95% interval


def _score_cell(cell: str) -> bool:
    """A shown score reads right: with its 95% interval (every shipped score keeps its per-example values, so a
    loss has its bootstrap interval too), or "—" where there is no score."""
    return cell == "—" or bool(WITH_CI.match(cell))


def _table(page, first_header: str, timeout: float = 60) -> list[list[str]]:
    """The table whose first column is ``first_header`` (header row first), once it has rows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t in page.evaluate(_TABLES):
            if len(t) > 1 and t[0] and t[0][0] == first_header:
                return t
        time.sleep(0.5)
    raise AssertionError(f"no table headed {first_header!r}")


def test_every_results_page_answers_at_a_glance_on_every_shipped_lab(server, server_cache, tmp_path):
    """#25's Done-when in the real browser: on demo-k3, demo-k4, demo-recycle, demo-vl and a lab with 3 true
    mixtures, every page opens without an exception; the best mixtures marked on the Simplex explorer, Pareto
    and Proxy vs true are the library's; every score shown on the Lab leaderboard, the Simplex explorer's
    selection and the Merge page has its n and 95% interval (a loss's a bootstrap over its per-example values, which every shipped score
    keeps), and the caption says which; demo-k4's pick, tied, reads "#4 (tied) of 21", 3 mixtures warn, and the Experts page
    gives each statistic's chance level. Screenshots of each page land in tmp_path."""
    from playwright.sync_api import expect, sync_playwright
    from test_app import three_true_lab

    from mixlab.analysis import best_mixtures, proxy_report, with_lab_mean
    from mixlab.engine import Engine, open_store
    from mixlab.lab import load_lab
    from mixlab.scoring.request import Method

    labs = {name: ROOT / "cache" / name for name in ("demo-k3", "demo-k4", "demo-recycle", "demo-vl")}
    labs["three"] = three_true_lab(tmp_path)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1440, "height": 1400})

        def visit(path: str, lab: Path, extra: str = "") -> None:
            page.goto(f"{server}/{path}?lab={lab}{extra}")
            page.locator("h1").first.wait_for(timeout=90_000)
            _settled(page)
            assert page.locator("[data-testid='stException']").count() == 0, (path, lab)

        for name, lab in labs.items():
            # the server's cache (MIXLAB_CACHE): shared by the labs, as a page reads it (demo-recycle's experts are
            # demo-k3's checkpoints, so their per-example values arrive with demo-k3's)
            eng = Engine(load_lab(lab), open_store(load_lab(lab), server_cache))
            rows = with_lab_mean(eng.results(Method.for_lab(eng.lab)), eng.lab.benchmarks)
            best = best_mixtures(rows, eng.names, "mean")
            losses = {b.name for b in eng.lab.benchmarks if b.evaluator == "lm_loss"}
            k = len(eng.names)

            visit("", lab)
            expect(page.get_by_text(re.compile(r"^Leaderboard on mean"))).to_be_visible(timeout=60_000)
            board = _table(page, "model")
            assert board[0][1:3] == ["mean [95% CI]", "n"], board[0]
            for row in board[1:]:
                assert WITH_CI.match(row[1]) and row[2].isdigit(), (name, row)
            page.screenshot(path=str(tmp_path / f"{name}-lab.png"))

            visit("simplex", lab, "&bench=mean")
            expect(page.get_by_text("The answer on mean")).to_be_visible(timeout=60_000)
            if "proxy" in best or "true" in best:  # the plot that carries the marks (not the first one drawn: K=15's
                # weight bars can come first under load)
                page.wait_for_function(f"() => ({_MARKS})().length > 0", timeout=60_000)
            marks = dict(page.evaluate(_MARKS))
            for trace, source in (("best under the proxy", "proxy"), ("best trained mixture", "true")):
                if source in best:
                    assert marks[trace][:k] == pytest.approx(list(best[source].weights), abs=1e-6), (name, trace)
                    assert marks[trace][k] == pytest.approx(best[source].score), (name, trace)
            scores = _table(page, "benchmark")
            assert scores[0][:3] == ["benchmark", "n", "proxy"], scores[0]
            for row in scores[1:]:
                assert row[1].isdigit(), (name, row)
                for header, cell in zip(scores[0][2:], row[2:]):
                    assert _score_cell(cell), (name, row[0], header, cell)
            expect(page.get_by_text(re.compile(r"^Each score with its 95% interval: Wilson's")).first).to_be_visible()
            if losses:
                expect(page.get_by_text(re.compile(r"a percentile bootstrap over the examples")).first).to_be_visible()
            page.screenshot(path=str(tmp_path / f"{name}-simplex.png"))

            visit("merge", lab, "&method=linear")
            beside = re.compile(r"^At .*: the linear proxy beside the base(,| and) the experts")
            expect(page.get_by_text(beside)).to_be_visible(timeout=90_000)
            context = _table(page, "model")
            models = [r[0] for r in context[1:]]
            assert "base" in models and {f"expert {n}" for n in eng.names if k <= 4} <= set(models), (name, models)
            if eng.lab.manifest.true_mixtures:
                assert any(m.endswith("trained mixture") for m in models), (name, models)
            for header, *cells in zip(*context):
                if header == "model":
                    continue
                bench, n = header.split(" · n=")
                assert n.isdigit(), header
                for model, cell in zip(models, cells):
                    assert _score_cell(cell), (name, header, model, cell)
            page.screenshot(path=str(tmp_path / f"{name}-merge.png"))

            visit("pareto", lab, "&bench=mean")
            expect(page.get_by_text(re.compile(r"^Marked: the best mixtures on"))).to_be_visible(timeout=60_000)
            for trace, weights in page.evaluate(_MARKS):
                source = "proxy" if trace == "best under the proxy" else "true"
                assert weights == pytest.approx(list(best[source].weights), abs=1e-6), (name, "pareto", trace)

            visit("proxy-vs-true", lab, "&bench=mean")
            headline = "This lab lists no true mixtures" if name == "demo-recycle" else "Spearman ρ [95% CI]"
            expect(page.get_by_text(headline).first).to_be_visible(timeout=60_000)
            report = {r["benchmark"]: r for r in proxy_report(rows[rows.benchmark != "mean"], eng.names,
                                                                eng.lab.benchmarks, n_boot=0)}  # fmt: skip
            if "mean" in report:
                page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
                picks = dict(page.evaluate(_PICK))
                assert picks["the proxy's pick"] == report["mean"]["pick"], name
                assert best["true"].label.endswith(f"({picks['best trained mixture']})"), name
            page.screenshot(path=str(tmp_path / f"{name}-proxy-vs-true.png"))

            visit("experts", lab)
            expect(page.get_by_text(re.compile(r"^Chance: if each expert's sign")).first).to_be_visible(timeout=60_000)
            expect(page.get_by_text(re.compile(r"^Chance: two unrelated directions")).first).to_be_visible()
        visit("proxy-vs-true", labs["demo-k4"], "&bench=mean")
        expect(page.get_by_text("#4 (tied) of 21").first).to_be_visible(timeout=60_000)
        page.screenshot(path=str(tmp_path / "pvt_k4_tied.png"))
        visit("proxy-vs-true", labs["three"], "&bench=rev")
        expect(page.get_by_text(re.compile(r"^Only 3 true mixtures to rank"))).to_be_visible(timeout=60_000)


@pytest.mark.timeout(
    2700
)  # real evaluations from a fresh cache: on 2 shared cores a 3-trial search and its baselines took > 10 min
def test_a_search_and_a_recycling_compare_show_progress_result_baselines_and_importance(server, tmp_path):
    """The issue's check (#27): pressed in a real browser, a search shows its progress and then its result,
    the baselines and the importance plot, and a recycling Compare its result and verdict, with no other
    interaction (the progress panel below each button polls its job to the end)."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1440, "height": 3000})
        # on demo-k4 (200 dev examples per benchmark): demo-k3's 1000 make each trial five times the work
        page.goto(f"{server}/search?lab={ROOT / 'cache' / 'demo-k4'}")
        page.get_by_test_id("stBaseButton-primary").filter(has_text="Search").wait_for(timeout=120_000)
        _settled(page)
        trials = page.get_by_label("Trials", exact=True)
        trials.fill("3")
        trials.press("Enter")
        _settled(page)
        page.get_by_test_id("stBaseButton-primary").filter(has_text="Search").click()
        expect(page.get_by_text(re.compile(r"^running: search mean of add, rev, sort, count"))).to_be_visible(
            timeout=120_000
        )
        expect(page.get_by_text(re.compile(r"^Done: search mean of add, rev, sort, count"))).to_be_visible(
            timeout=1_800_000
        )
        expect(page.get_by_text("The winner beside its baselines")).to_be_visible(timeout=60_000)
        expect(
            page.get_by_text(re.compile(r"The winner's test mean of add, rev, sort, count: \d\.\d{4}; uniform: "))
        ).to_be_visible()
        expect(page.get_by_text("Importance of each expert's weight")).to_be_visible(timeout=60_000)  # under load
        page.locator(".js-plotly-plot").nth(3).wait_for(timeout=60_000)  # weights, history, importance, slice…
        expect(page.get_by_text(re.compile(r"^Contour: the objective \(dev\) over the weights of"))).to_be_visible()
        contours = "() => [...document.querySelectorAll('.js-plotly-plot')].filter(p => p._fullData.some(t => t.type === 'contour')).length"
        page.wait_for_function(f"({contours})() === 1", timeout=60_000)
        page.screenshot(path=str(tmp_path / "search_done.png"), full_page=True)

        # a second study (random search), then the studies compared: one best-so-far curve per study
        page.get_by_test_id("stSelectbox").filter(has_text="Sampler").click()
        page.get_by_role("option", name="random", exact=True).click()
        _settled(page)
        page.get_by_test_id("stBaseButton-primary").filter(has_text="Search").click()
        expect(page.get_by_text(re.compile(r"^Done: search mean of add, rev, sort, count \(random"))).to_be_visible(
            timeout=1_800_000
        )
        expect(page.get_by_text("Studies compared")).to_be_visible(timeout=60_000)
        curves = (
            "() => [...document.querySelectorAll('.js-plotly-plot')].filter(p => "
            "(p.layout?.yaxis?.title?.text || '').startsWith('best so far')).map(p => p._fullData.map(t => "
            "[t.name, t.x.length, Math.max(...t.y)]))"
        )
        # the section is drawn again when the job ends: wait for both curves with their 3 trials each
        full = f"(() => {{ const c = ({curves})(); return c.length === 1 && c[0].every(t => t[1] === 3); }})()"
        page.wait_for_function(full, timeout=120_000)
        (drawn,) = page.evaluate(curves)
        assert len(drawn) == 2, drawn  # this study and the one compared with it
        assert {name.split("-")[1] for name, _, _ in drawn} == {"random", "tpe"}, drawn
        assert all(n == 3 for _, n, _ in drawn), drawn  # each curve has its 3 trials
        page.get_by_text("Studies compared").scroll_into_view_if_needed()
        page.screenshot(path=str(tmp_path / "search_compare.png"), full_page=True)

        page.goto(f"{server}/search?lab={ROOT / 'cache' / 'demo-recycle'}")
        page.get_by_role("button", name="Compare").wait_for(timeout=120_000)
        _settled(page)
        page.get_by_role("button", name="Compare").click()
        expect(page.get_by_text(re.compile(r"^Done: recycling 14 checkpoints.*replayed the 140 points"))).to_be_visible(
            timeout=300_000
        )
        expect(
            page.get_by_text(re.compile(r"(within noise of|better than|worse than) the greedy soup \("))
        ).to_be_visible(timeout=60_000)
        page.screenshot(path=str(tmp_path / "recycle_done.png"), full_page=True)

        # the pool's trade-offs: a front of cached merges against every checkpoint, and no trained mixtures named
        page.goto(f"{server}/pareto?lab={ROOT / 'cache' / 'demo-recycle'}")
        expect(page.get_by_text(re.compile(r"^Marked: the best mixtures on"))).to_be_visible(timeout=120_000)
        _settled(page)
        names = (
            "() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(p => (p._fullData || []).map(t => t.name))"
        )
        page.wait_for_function(f"({names})().includes('front of merges')", timeout=120_000)  # drawn after the text
        legend = page.evaluate(names)
        assert "front of merges" in legend and "front of the checkpoints alone" in legend, legend
        assert not [n for n in legend if "trained" in n or "true" in n], legend
        page.screenshot(path=str(tmp_path / "pareto_recycle.png"), full_page=True)
        # 14 checkpoints: one table of weights, not 14 sliders
        page.goto(f"{server}/merge?lab={ROOT / 'cache' / 'demo-recycle'}")
        page.get_by_test_id("stDataFrame").first.wait_for(timeout=120_000)
        _settled(page)
        assert page.locator("[data-testid='stSliderThumbValue']").count() == 0
        page.screenshot(path=str(tmp_path / "merge_recycle.png"), full_page=True)
        browser.close()
