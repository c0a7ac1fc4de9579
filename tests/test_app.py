"""Every page through streamlit's AppTest, on the shipped demo lab (its cache redirected to tmp)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from mixlab.demo import DEMO_LAB
from mixlab.scoring import cached as cached_scores

ROOT = DEMO_LAB.parents[1]

PAGES = [
    "views/1_lab.py",
    "views/2_simplex.py",
    "views/3_merge.py",
    "views/4_proxy_vs_true.py",
    "views/5_pareto.py",
    "views/6_experts.py",
    "views/7_search.py",
]


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXLAB_CACHE", str(tmp_path / "cache.sqlite"))
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    return at


def slider(at, label):
    return next(s for s in at.slider if s.label == label)


def selectbox(at, label):
    return next(s for s in at.selectbox if s.label == label)


def _open(at, page):
    at.run()
    if page != PAGES[0]:
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_a_first_visit_draws_the_simplex_frame_while_the_scores_are_read(app, monkeypatch):
    """On a server that has not read the lab's scores yet (about a second on demo-k3), the Simplex page first
    draws the triangle with the selected mixture, so the browser starts loading Plotly meanwhile; the plot
    then takes its place (one chart on the page). Once the scores are read, a rerun draws the plot alone."""
    drawn = []
    real = st.plotly_chart

    def spy(fig, *args, key=None, **kw):
        drawn.append((key, {t.name: len(t.customdata) for t in fig.data}))
        return real(fig, *args, key=key, **kw)

    monkeypatch.setattr(st, "plotly_chart", spy)
    app.switch_page(PAGES[1])
    app.run()
    assert not app.exception, [e.message for e in app.exception]
    assert [key for key, _ in drawn] == ["simplex_frame", "simplex_plot"]
    assert drawn[0][1] == {"proxy (merged experts)": 0, "selected": 1}  # the frame: no scores, the selection
    (shown,) = app.get("plotly_chart")
    spec = json.loads(shown.proto.spec)
    rows = int(spec["data"][0]["customdata"]["shape"].split(",")[0])  # (Plotly's typed array: rows, K + 2)
    assert spec["layout"]["ternary"] and rows == drawn[1][1]["proxy (merged experts)"] > 0
    drawn.clear()
    app.run()
    assert [key for key, _ in drawn] == ["simplex_plot"]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs(app, page):
    at = _open(app, page)
    assert at.title[0].value
    assert not at.error, [e.value for e in at.error]


def test_lab_page_lists_experts_and_bad_lab_is_a_clear_error(app, tmp_path):
    at = _open(app, PAGES[0])
    experts = next(d.value for d in at.dataframe if "expert" in d.value.columns)
    assert list(experts["expert"]) == ["add", "rev", "sort"]
    at.text_input(key="lab_input").set_value(str(tmp_path / "nowhere"))
    at.button[0].click()
    at.run()
    assert not at.exception
    assert any("no lab manifest" in e.value for e in at.error)


def test_the_lab_pages_cache_caption_reads_as_counts_not_a_dict(app):
    at = _open(app, PAGES[0])
    (caption,) = [c.value for c in at.caption if c.value.startswith("Evaluation cache")]
    # scores, one per benchmark (6): the base's 6, 3 experts' 18, 46 true mixtures' 92 checkpoints' 552 (each
    # mixture trained with 2 seeds)
    assert "{" not in caption and re.search(
        r"[\d,]+ proxy scores; 6 of the base, 18 of experts and 552 of true", caption
    )


@pytest.mark.parametrize("lab", ["demo-k3", "demo-k4"])
def test_the_lab_page_opens_on_a_leaderboard_and_the_headline_rho(app, lab):
    from scipy import stats

    from mixlab.analysis import MEAN, paired, snap_ties, with_lab_mean
    from mixlab.engine import Engine
    from mixlab.lab import load_lab

    eng = Engine(load_lab(DEMO_LAB.parent / lab))
    df = eng.results("linear", {})
    app.query_params["lab"] = str(DEMO_LAB.parent / lab)
    at = _open(app, PAGES[0])
    board = next(d.value for d in at.dataframe if "model" in d.value.columns).set_index("model")
    # by hand: the mean of the exact-match benchmarks (the higher-is-better ones), per model
    up = [b.name for b in eng.lab.benchmarks if b.higher_is_better]
    acc = df[df.benchmark.isin(up)]
    base = acc[acc.kind == "base"].score.mean()
    assert board.loc["base", "mean [95% CI]"].startswith(f"{base:.3f} [")
    true_means = acc[acc.kind == "true"].groupby("label").score.mean()  # replicates: the mean of their seeds
    shown = board.loc["best trained mixture", "mean [95% CI]"]
    assert shown.startswith(f"{true_means.max():.3f} [")  # demo-k3's best is trained twice: its seeds' interval
    tied_best = set(true_means[true_means > true_means.max() - 1e-9].index)  # demo-k4: two, on float noise
    name = board.loc["best trained mixture", "mixture"].split("; tied")[0].rsplit(" (", 1)[1].rstrip(")")
    assert name in tied_best and ("; tied with" in board.loc["best trained mixture", "mixture"]) == (len(tied_best) > 1)
    proxies = acc[acc.kind == "proxy"]
    proxy_means = proxies.groupby(proxies.weights.map(lambda w: tuple(sorted(w.items())))).score.mean()
    assert board.loc["proxy's best merge", "mean [95% CI]"].startswith(f"{proxy_means.max():.3f} [")
    # the trained model at the proxy's best merge (demo-k3: trained twice, so its seeds' mean), with its interval
    best_w = dict(proxy_means.idxmax())
    there = [lbl for lbl, w in acc[acc.kind == "true"].groupby("label").weights.first().items()
             if all(abs(w.get(n, 0) - best_w.get(n, 0)) < 1e-6 for n in eng.names)]  # fmt: skip
    cell = board.loc["proxy's best merge", "true model there [95% CI]"]
    assert (
        cell == "not trained"
        if not there
        else re.fullmatch(rf"{true_means[there[0]]:.3f} \[\d\.\d{{3}}, \d\.\d{{3}}\]", cell)
    )
    assert list(board.index[:1]) == ["best trained mixture"]  # best first
    assert board.iloc[0]["vs the first [95% CI]"] == ""
    diff = float(board.loc["base", "vs the first [95% CI]"].split(" [")[0])
    assert diff == pytest.approx(base - true_means.max(), abs=6e-4)  # the base minus the best, rounded to 3
    pairs = paired(with_lab_mean(df, eng.lab.benchmarks), eng.names, MEAN)
    rho = stats.spearmanr(snap_ties(pairs.proxy), snap_ties(pairs.true)).statistic
    shown = {m.label: m.value for m in at.metric}
    assert shown["Spearman ρ [95% CI]"].startswith(f"{rho:+.2f} [")


def test_injected_mixture_is_selected_and_weights_stay_on_the_simplex(app):
    app.session_state["mixture"] = [0.5, 0.25, 0.25]
    at = _open(app, PAGES[1])
    assert "` add ` **0.500** · ` rev ` **0.250** · ` sort ` **0.250**" in [m.value for m in at.markdown]
    slider(at, "add").set_value(0.8)
    at.run()
    w = at.session_state["mixture"]
    assert w[0] == pytest.approx(0.8) and sum(w) == pytest.approx(1.0) and w[1] == pytest.approx(w[2])


def test_the_selected_mixtures_scores_carry_n_and_a_wilson_interval(app):
    from scipy import stats

    from mixlab.engine import Engine
    from mixlab.lab import load_lab

    at = _open(app, PAGES[1])  # the uniform mixture: a proxy and a trained model at the same point
    table = next(d.value for d in at.dataframe if "n" in d.value.columns)
    add = table.set_index("benchmark").loc["add"]
    df = Engine(load_lab(DEMO_LAB)).results("linear", {})
    proxy = df[(df.kind == "proxy") & (df.benchmark == "add")]
    at_uniform = proxy[[abs(w["add"] - 1 / 3) < 1e-3 and abs(w["rev"] - 1 / 3) < 1e-3 for w in proxy.weights]]
    score, n = at_uniform.score.iloc[-1], int(at_uniform.n.iloc[-1])
    k, z = round(score * n), stats.norm.ppf(0.975)
    root = z * (z * z + 4 * k * (n - k) / n) ** 0.5
    lo, hi = (2 * k + z * z - root) / (2 * (n + z * z)), (2 * k + z * z + root) / (2 * (n + z * z))
    assert add["n"] == str(n) and add["proxy"] == f"{score:.3f} [{lo:.3f}, {hi:.3f}]"
    # a loss: the bootstrap interval of its shipped per-example values (Σ NLL / Σ tokens), as scipy's percentile
    loss = df[(df.kind == "proxy") & (df.benchmark == "add-loss")]
    v = loss[[abs(w["add"] - 1 / 3) < 1e-3 and abs(w["rev"] - 1 / 3) < 1e-3 for w in loss.weights]]["values"].iloc[-1]
    ref = stats.bootstrap((v.values.astype(float), v.weights.astype(float)), lambda x, t, axis: x.sum(axis) / t.sum(axis),
                          paired=True, vectorized=True, n_resamples=10000, method="percentile",
                          random_state=np.random.default_rng(2)).confidence_interval  # fmt: skip
    shown = [float(x) for x in re.findall(r"\d+\.\d+", table.set_index("benchmark").loc["add-loss", "proxy"])]
    width = ref.high - ref.low
    assert shown[0] == pytest.approx(v.score(), abs=6e-4)
    assert shown[1:] == pytest.approx([ref.low, ref.high], abs=0.08 * width + 6e-4)
    assert any("Wilson" in c.value and "bootstrap" in c.value for c in at.caption)


def _figures(at):
    def walk(node):
        for child in getattr(node, "children", {}).values():
            yield child
            yield from walk(child)

    return [json.loads(e.proto.spec) for e in walk(at._tree) if getattr(e, "type", "") == "plotly_chart"]


def _array(v) -> np.ndarray:
    """A figure's array as Plotly sends it: a list, or a typed array (dtype, base64 bytes, shape)."""
    if isinstance(v, dict) and "bdata" in v:
        import base64

        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        return a.reshape([int(x) for x in str(v.get("shape", len(a))).split(",")])
    return np.asarray(v, dtype=float)


def _marked(fig, name):
    (trace,) = [t for t in fig["data"] if t.get("name") == name]
    return list(_array(trace["customdata"])[0])


@pytest.mark.parametrize("lab, bench", [("demo-k3", "mean"), ("demo-k4", "rev"), ("demo-k4", "add-loss")])
def test_the_simplex_explorer_marks_the_best_proxy_and_trained_mixture(app, lab, bench):
    from mixlab.analysis import with_lab_mean
    from mixlab.engine import Engine
    from mixlab.lab import load_lab

    eng = Engine(load_lab(DEMO_LAB.parent / lab))
    df = with_lab_mean(eng.results("linear", {}), eng.lab.benchmarks)
    sub = df[df.benchmark == bench]
    best_of = (lambda s: s.max()) if sub.higher_is_better.iloc[0] else (lambda s: s.min())
    app.query_params["lab"] = str(DEMO_LAB.parent / lab)
    app.query_params["bench"] = bench
    at = _open(app, PAGES[1])
    (fig,) = _figures(at)
    k = len(eng.names)
    for name, kind in (("best under the proxy", "proxy"), ("best trained mixture", "true")):
        data = _marked(fig, name)
        scores = sub[sub.kind == kind].groupby("label").score.mean()  # a mixture trained twice: its seeds' mean
        assert data[k] == pytest.approx(best_of(scores), abs=1e-9)  # pandas' extreme, up to a float-noise tie
        rows = sub[sub.kind == kind]
        at_point = rows[[np.allclose([w.get(n, 0.0) for n in eng.names], data[:k], atol=1e-6) for w in rows.weights]]
        assert at_point.score.mean() == pytest.approx(data[k])  # the marker sits at that mixture
    assert any("best under the proxy" in m.value for m in at.markdown)
    at.button(key="simplex_best_true").click().run()
    assert at.session_state["mixture"] == pytest.approx(_marked(fig, "best trained mixture")[:k], abs=1e-6)


def test_the_simplex_colours_rank_within_each_source_on_request(app):
    from scipy import stats

    at = _open(app, PAGES[1])
    at.radio(key="simplex_colour").set_value("rank").run()
    (fig,) = _figures(at)
    proxy = fig["data"][0]
    scores = _array(proxy["customdata"])[:, 3]
    # mean: higher is better; means equal but for float noise tie (rounded to 12 decimals here)
    want = 1 - (stats.rankdata(-np.round(scores, 12), method="min") - 1) / (len(scores) - 1)
    np.testing.assert_allclose(_array(proxy["marker"]["color"]), want, atol=1e-9)
    assert "rank within each source" in proxy["marker"]["colorbar"]["title"]["text"]


def test_the_latest_searchs_winner_is_marked_and_listed(app):
    """A single-objective search's winner (as the Search page keeps it) is marked at its weights, with its
    test score on the benchmark shown; a multi-objective front is not a single answer and is not."""
    won = {"weights": {"add": 0.2, "rev": 0.3, "sort": 0.5}, "dev": [0.61], "test": {"mean": 0.575, "add": 0.3}}
    app.session_state["searched_front"] = {"objectives": [["mean"]], "best": [won]}
    at = _open(app, PAGES[1])
    (fig,) = _figures(at)
    assert _marked(fig, "the search's winner") == pytest.approx([0.2, 0.3, 0.5, 0.575, 5])
    shown = [re.sub(r"\\(.)", r"\1", m.value) for m in at.markdown]  # as rendered: markdown escapes undone
    assert any("the search's winner: add=0.2, rev=0.3, sort=0.5 — 0.575" in m for m in shown)
    at.session_state["searched_front"] = {"objectives": [["add"], ["rev"]], "best": [won]}
    at.run()
    (fig,) = _figures(at)
    assert not [t for t in fig["data"] if t.get("name") == "the search's winner"]


def test_the_pareto_plot_marks_the_best_mixtures_where_they_score(app):
    from mixlab.analysis import best_mixtures, pareto_points, with_lab_mean
    from mixlab.engine import Engine
    from mixlab.lab import load_lab

    eng = Engine(load_lab(DEMO_LAB))
    df = with_lab_mean(eng.results("linear", {}), eng.lab.benchmarks)
    app.query_params["bench"] = "sort"
    at = _open(app, PAGES[4])
    (fig,) = _figures(at)
    best = best_mixtures(df, eng.names, "sort")
    sort = df[(df.benchmark == "sort") & (df.kind == "true")]
    assert best["true"].score == pytest.approx(sort.groupby("label").score.mean().max(), abs=1e-12)  # seeds' mean
    for name, b in (("best under the proxy", best["proxy"]), ("best trained mixture", best["true"])):
        (trace,) = [t for t in fig["data"] if t.get("name") == name]
        w = dict(zip(eng.names, b.weights))
        pts = pareto_points(df[df.kind == b.source], eng.names, "add", "rev")
        (row,) = [r for _, r in pts.iterrows() if all(abs(r[n] - w[n]) < 1e-6 for n in eng.names)]
        assert (_array(trace["x"])[0], _array(trace["y"])[0]) == (pytest.approx(row.x), pytest.approx(row.y))
    assert any("The answer on sort" in m.value for m in at.markdown)


def test_benchmark_choice_changes_the_scores_shown(app):
    at = _open(app, PAGES[3])
    first = [m.value for m in at.metric]
    selectbox(at, "Benchmark").set_value("rev")
    at.run()
    assert not at.exception and [m.value for m in at.metric] != first


def test_merge_page_renders_registry_params(app):
    at = _open(app, PAGES[2])
    at.selectbox(key="merge_method").set_value("ties")
    at.run()
    labels = {n.label for n in at.number_input}
    assert {"density", "scale"} <= labels and any(c.label == "normalize" for c in at.checkbox)
    # the lab's cached TIES proxies use density 0.5 (the registry's default is 0.2): the page starts there
    assert next(n for n in at.number_input if n.label == "density").value == 0.5
    assert any("cached ties proxies" in c.value for c in at.caption)


def test_pareto_page_with_same_benchmark_warns(app):
    at = _open(app, PAGES[4])
    at.selectbox(key="pareto_y").set_value(at.selectbox(key="pareto_x").value)
    at.run()
    assert "two different benchmarks" in at.warning[0].value


def test_pareto_page_draws_three_objectives_in_3d(app):
    import json

    at = _open(app, PAGES[4])
    at.selectbox(key="pareto_z").set_value(at.selectbox(key="pareto_x").value).run()
    assert "a third, different from both" in at.warning[0].value
    at.selectbox(key="pareto_z").set_value("sort").run()
    assert not at.exception and not at.warning
    figs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    (fig,) = [f for f in figs if any(t["type"] == "scatter3d" for t in f["data"])]
    assert fig["layout"]["scene"]["zaxis"]["title"]["text"] == "sort"
    table = next(d.value for d in at.dataframe if "sort (z)" in d.value.columns)
    assert len(table) and set(table.kind) <= {"expert", "proxy"}


def test_library_never_imports_streamlit():
    import subprocess
    import sys

    code = "import sys, mixlab.cli, mixlab.engine, mixlab.plots, mixlab.analysis, mixlab.run.jobs, mixlab.diagnostics, mixlab.demo.build; print('streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_demo_lab_is_shipped():
    assert (DEMO_LAB / "lab.toml").is_file() and (DEMO_LAB / "evaluations.jsonl").is_file()


def test_k4_lab_projection_view(app):
    app.query_params["lab"] = str(DEMO_LAB.parent / "demo-k4")
    at = _open(app, PAGES[1])
    assert any("K=4" in c.value for c in at.caption)
    assert "` count ` **0.250**" in " ".join(m.value for m in at.markdown)


# --- safety: the dashboard is reachable by someone we do not trust ---------------------------------


def test_committed_streamlit_config_is_safe():
    import tomllib

    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    server, client = cfg["server"], cfg["client"]
    assert server["address"] == "127.0.0.1" and server["headless"] is True
    assert server["enableXsrfProtection"] is True and server["enableCORS"] is True
    assert server["enableStaticServing"] is False and server["runOnSave"] is False
    assert client["showErrorDetails"] == "none"
    assert server["fileWatcherType"] == "none"  # a watcher would walk the .venv inside the app folder
    assert cfg["browser"]["gatherUsageStats"] is False
    # no full garbage collection after each page run: it starved a running job beside a polling page
    assert cfg["runner"]["postScriptGC"] is False
    from streamlit import config

    assert "runner.postScriptGC" in config._config_options_template  # a real option of this Streamlit


def _lab_copy(tmp_path, scores: bool = True):
    import shutil

    dst = tmp_path / "lab"
    ignore = [".mixlab", "exports"] + ([] if scores else ["evaluations.jsonl"])
    shutil.copytree(DEMO_LAB, dst, ignore=shutil.ignore_patterns(*ignore))
    return dst


def test_lab_url_opens_only_a_lab_manifest_and_never_echoes_another_toml(app):
    app.query_params["lab"] = str(ROOT / "pyproject.toml")  # a TOML with keys of its own
    at = _open(app, PAGES[0])
    shown = " ".join(e.value for e in at.error)
    assert "no lab manifest" in shown and "ruff" not in shown and "testpaths" not in shown


def test_lab_url_never_follows_a_lab_toml_link_to_another_file(app, tmp_path):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('name = "x"\npassword = "hunter2"\n')  # a validation error would name its keys and values
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "lab.toml").symlink_to(secrets)
    app.query_params["lab"] = str(tmp_path / "lab")
    at = _open(app, PAGES[0])
    shown = " ".join(e.value for e in at.error)
    assert "symbolic link" in shown and "hunter2" not in shown and "password" not in shown


def test_lab_url_cannot_inject_markdown(app, tmp_path):
    evil = tmp_path / "[click me](https:"
    app.query_params["lab"] = f"{evil}//example.com)"
    at = _open(app, PAGES[0])
    import re

    every = [e.value for e in at.error] + [c.value for c in at.sidebar.caption]
    outside_code = [re.sub(r"(`+) .*? \1", "", v) for v in every]  # inside a code span a link is inert
    assert every and not any("[click me](https://example.com)" in v for v in outside_code)
    assert any("\\[click me\\]" in v for v in every)  # the library's message escaped: shown, not a link


@pytest.mark.parametrize("page", PAGES)
def test_every_page_works_on_a_lab_with_no_cached_scores(app, tmp_path, monkeypatch, page):
    monkeypatch.delenv("MIXLAB_CACHE")
    app.query_params["lab"] = str(_lab_copy(tmp_path, scores=False))
    at = _open(app, page)
    assert not at.error, [e.value for e in at.error]


def test_a_new_lab_gets_its_first_score_from_the_simplex_page(app, tmp_path, monkeypatch):
    from mixlab.engine import Engine
    from mixlab.lab import load_lab
    from views.jobs import worker

    monkeypatch.delenv("MIXLAB_CACHE")
    lab = _lab_copy(tmp_path, scores=False)
    app.query_params["lab"] = str(lab)
    at = _open(app, PAGES[1])
    at.button(key="simplex_evaluate").click().run()
    for job in list(worker().jobs):
        worker().wait(job, 300)
    assert cached_scores.cached(Engine(load_lab(lab)), "proxy")  # the score landed in the lab's own cache


def test_a_corrupt_cache_is_a_notice_on_every_page_and_is_left_alone(app, tmp_path, monkeypatch):
    monkeypatch.delenv("MIXLAB_CACHE")
    lab = _lab_copy(tmp_path)
    cache = lab / ".mixlab" / "evaluations.sqlite"
    cache.parent.mkdir()
    cache.write_bytes(b"not sqlite" * 500)
    app.query_params["lab"] = str(lab)
    for page in PAGES[:3]:
        at = _open(app, page)
        assert "corrupt" in _shown(at.warning), page
    assert cache.read_bytes() == b"not sqlite" * 500


def _shown(elements) -> str:
    """What the page shows, with the markdown escapes (backslashes) taken out."""
    return " | ".join(e.value for e in elements).replace("\\", "")


def _export(at, name: str, replace: bool = False):
    next(t for t in at.text_input if t.key.startswith("merge_export_name")).set_value(name)
    at.checkbox(key="merge_export_replace").set_value(replace)
    at.button(key="merge_export").click().run()
    assert not at.exception
    return at


def test_the_export_name_follows_the_method_and_the_mixture(app):
    at = _open(app, PAGES[2])
    (name,) = [t for t in at.text_input if t.key.startswith("merge_export_name")]
    assert name.value == "linear_add33_rev33_sort33"
    selectbox(at, "Merge method").set_value("ties").run()
    (name,) = [t for t in at.text_input if t.key.startswith("merge_export_name")]
    assert name.value == "ties_add33_rev33_sort33"  # not the name drawn for linear


def test_exports_from_the_app_land_in_the_lab_and_never_replace_other_folders(app, tmp_path, monkeypatch):
    monkeypatch.delenv("MIXLAB_CACHE")
    lab = _lab_copy(tmp_path)
    app.query_params["lab"] = str(lab)
    at = _open(app, PAGES[2])
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    for name in (str(victim), "../victim", "..", ".hidden", "a/b"):  # paths, not names: refused
        _export(at, name)
        assert "must be 1-100 letters" in _shown(at.error), name
    assert (victim / "keep.txt").read_text() == "mine"

    _export(at, "mine")
    out = lab / "exports" / "mine"
    assert (out / "model.safetensors").is_file() and (out / "mixlab_merge.json").is_file()
    assert not list(out.glob("*.py"))
    _export(at, "mine")  # exists, replace not ticked
    assert "exists and is not empty" in _shown(at.error)
    _export(at, "mine", replace=True)  # an earlier export may be replaced when asked
    assert any("Wrote" in s.value for s in at.success)

    (lab / "exports" / "notes").mkdir()
    (lab / "exports" / "notes" / "todo.txt").write_text("keep")
    _export(at, "notes", replace=True)  # not a mixlab export: never replaced
    assert "not a mixlab export" in _shown(at.error)
    assert (lab / "exports" / "notes" / "todo.txt").read_text() == "keep"
    (lab / "exports" / "afile").write_text("x")
    _export(at, "afile", replace=True)
    assert "is a file, not a folder" in _shown(at.error)


def test_proxy_vs_true_shows_scipys_spearman(app):
    from scipy import stats

    from mixlab.analysis import paired
    from mixlab.engine import Engine
    from mixlab.lab import load_lab

    at = _open(app, PAGES[3])
    selectbox(at, "Benchmark").set_value("rev")
    at.run()
    eng = Engine(load_lab(DEMO_LAB))
    pairs = paired(eng.results("linear", {}), eng.names, "rev")
    want = stats.spearmanr(pairs.proxy, pairs.true).statistic
    shown = {m.label: m.value for m in at.metric}
    rho, low, high = (float(x) for x in re.findall(r"[+-]\d\.\d+", shown["Spearman ρ [95% CI]"]))
    assert rho == pytest.approx(want, abs=5e-3) and int(shown["Mixtures (n)"]) == len(pairs)
    assert low < rho < high  # the CI in the headline, not only in a tooltip


def test_a_pick_tied_for_best_reads_first_tied_on_the_proxy_vs_true_page(app, tmp_path):
    """demo-k4 with its first seeds only (as it shipped before its second seeds): on the mean the proxy's
    pick and the best trained mixture differ by 1.1e-16 (float noise)."""
    from mixlab.analysis import MEAN, paired, with_lab_mean
    from mixlab.engine import Engine
    from mixlab.lab import load_lab

    lab = first_seeds_only(DEMO_LAB.parent / "demo-k4", tmp_path / "k4")
    eng = Engine(load_lab(lab))
    pairs = paired(with_lab_mean(eng.results("linear", {}), eng.lab.benchmarks), eng.names, MEAN)
    pick_true = pairs.true.iloc[int(pairs.proxy.to_numpy().argmax())]
    # a tie, not a miss: summed in row order the two means differed by 1.1e-16; summed exactly (fsum) they are equal
    assert 0 <= pairs.true.max() - pick_true < 1e-12
    app.query_params["lab"] = str(lab)
    app.query_params["bench"] = MEAN
    at = _open(app, PAGES[3])
    shown = {m.label: m.value for m in at.metric}
    assert shown["Proxy's pick: rank under true"] == f"#1 (tied) of {len(pairs)}"
    assert any("#1 (tied)" in c.value and "regret 0.0000" in c.value for c in at.caption)


def three_true_lab(tmp_path):
    """demo-k3 with only its first 3 true mixtures (its cached scores and their per-example values come along): its
    manifest read by load_lab, trimmed, and written back by the library's one writer (ManifestWriter)."""
    import shutil

    from mixlab.lab import load_lab
    from mixlab.manifest_writer import ManifestWriter

    src, root = DEMO_LAB.parent / "demo-k3", tmp_path / "three"
    manifest = load_lab(src).manifest
    data = manifest.model_dump(mode="json", exclude_defaults=True)
    data["true_mixtures"] = data["true_mixtures"][:3]
    root.mkdir()
    for part in ("base", "data", "experts", "evaluations.jsonl", "example_values.jsonl"):
        (shutil.copytree if (src / part).is_dir() else shutil.copy)(src / part, root / part)
    for tm in data["true_mixtures"]:
        for folder in tm.get("paths") or [tm["path"]]:  # replicates: every seed's checkpoint
            shutil.copytree(src / folder, root / folder)
    doc = ManifestWriter()
    tables = {k: v for k, v in data.items() if isinstance(v, (list, dict)) and k != "plugins"}
    for key, value in data.items():  # top-level keys first: TOML puts them before any table
        if key not in tables:
            doc.set(key, value)
    for key, value in tables.items():
        for entry in value if isinstance(value, list) else [value]:
            doc.item(key) if isinstance(value, list) else doc.table(key)
            for k, v in entry.items():
                doc.set(k, v)
    doc.write(root)
    assert [t.name for t in load_lab(root).manifest.true_mixtures] == [t.name for t in manifest.true_mixtures[:3]]
    return root


def test_three_true_mixtures_are_too_few_to_rank_and_the_page_says_how_many_would_do(app, tmp_path):
    from mixlab.analysis import mixtures_needed, spearman_ci_width

    app.query_params["lab"] = str(three_true_lab(tmp_path))
    app.query_params["bench"] = "rev-loss"
    at = _open(app, PAGES[3])
    shown = {m.label: m.value for m in at.metric}
    assert shown["Mixtures (n)"] == "3" and shown["Spearman ρ [95% CI]"].endswith("(no CI: n=3)")
    warning = " ".join(w.value for w in at.warning)
    assert f"Only 3 true mixtures to rank: ρ's 95% CI is about {spearman_ci_width(0.5, 3):.1f} wide" in warning
    assert f"About {mixtures_needed(0.5, 0.5)} give a CI 0.5 wide" in warning
    summary = next(d.value for d in at.dataframe if "top-25% ρ" in d.value.columns)
    assert "undefined" in set(summary["top-25% ρ"])  # one mixture in the top quarter: undefined, not None
    assert not summary.isna().any().any()
    # no bootstrap CI on 3 mixtures anywhere on the page: the table says so as the headline does
    assert set(summary["ρ 95% low"]) == set(summary["ρ 95% high"]) == {"undefined"}
    assert any("(no CI: n=3)" in c.value for c in at.caption)


def test_proxy_vs_true_draws_ranks_on_y_equals_x_with_the_pick_and_the_best_marked(app):
    from scipy import stats

    from mixlab.analysis import paired
    from mixlab.engine import Engine
    from mixlab.lab import load_lab

    eng = Engine(load_lab(DEMO_LAB))
    pairs = paired(eng.results("linear", {}), eng.names, "rev")
    app.query_params["bench"] = "rev"
    at = _open(app, PAGES[3])
    (fig,) = _figures(at)
    by_name = {t.get("name"): t for t in fig["data"]}
    points = fig["data"][0]
    order = list(points["text"])
    # ranks as scipy ranks them, of the seeds' means rounded past float noise (0.9 and 0.95 average to
    # 0.92499…: the page ranks it tied with a 0.925, as every mixlab rank does)
    want = stats.rankdata(-pairs.set_index("label").loc[order].true.round(12), method="min")
    np.testing.assert_array_equal(_array(points["y"]), want)  # ranks by default, as scipy ranks them
    pick = pairs.label.iloc[int(pairs.proxy.to_numpy().argmax())]  # numpy's first maximum
    assert by_name["the proxy's pick"]["text"] == [pick]
    top = pairs[pairs.true == pairs.true.max()].label
    assert by_name["best trained mixture"]["text"][0] in set(top)
    assert "y = x" in by_name
    at.selectbox(key="pvt_colour").set_value("sort").run()
    at.radio(key="pvt_axes").set_value("scores").run()
    (fig,) = _figures(at)
    points = fig["data"][0]
    sort = pairs.set_index("label").loc[list(points["text"])]
    np.testing.assert_allclose(_array(points["marker"]["color"]), sort["sort"])
    np.testing.assert_allclose(_array(points["x"]), sort.proxy)


@pytest.mark.parametrize("lab, k", [("demo-k3", 3), ("demo-k4", 4)])
def test_the_experts_page_shows_each_statistic_beside_its_chance_level(app, lab, k):
    app.query_params["lab"] = str(DEMO_LAB.parent / lab)
    at = _open(app, PAGES[5])
    table = next(d.value for d in at.dataframe if "chance" in d.value.columns)
    # LoRA experts change every entry: chance is 1 − 2·0.5^K on every layer (0.75 at K=3, 0.875 at K=4)
    np.testing.assert_allclose(table["chance"], 1 - 2 * 0.5**k, rtol=1e-6)
    assert (abs(table["conflicts"] - table["chance"]) < 0.01).all()  # the shipped experts conflict at chance
    captions = " ".join(c.value for c in at.caption)
    assert f"{1 - 2 * 0.5**k:.3f} when all {k} do" in captions
    dims = 100_352  # the demo model's flattened task vector
    assert f"{1.959964 / dims**0.5:.4f} (1.96/√d)" in captions and "cosine 0.094" in captions
    (conf,) = [f["data"][0] for f in _figures(at) if f["data"][0]["colorbar"]["title"]["text"] == "observed − chance"]
    assert conf["colorscale"] and f"chance {1 - 2 * 0.5**k:.3f}" in str(conf["text"])


def test_the_chosen_mixture_stays_chosen_on_every_page(app):
    """One home for the mixture: a choice on one page is what every other page shows and would evaluate,
    whichever page it was made on and however often the pages are switched."""
    at = _open(app, PAGES[1])
    slider(at, "add").set_value(0.6)
    at.run()
    chosen = list(at.session_state["mixture"])
    assert chosen[0] == pytest.approx(0.6) and sum(chosen) == pytest.approx(1.0)
    for page in [PAGES[2], PAGES[4], PAGES[0], PAGES[1], PAGES[2]]:
        at.switch_page(page)
        at.run()
        assert not at.exception and list(at.session_state["mixture"]) == chosen, page
        if at.slider:
            assert [s.value for s in at.slider] == pytest.approx([round(w, 4) for w in chosen])
    slider(at, "sort").set_value(0.1)  # on the Merge page now
    at.run()
    moved = list(at.session_state["mixture"])
    assert moved[2] == pytest.approx(0.1) and moved != chosen
    at.switch_page(PAGES[1])
    at.run()
    assert [s.value for s in at.slider] == pytest.approx([round(w, 4) for w in moved])
    assert "` sort ` **0.100**" in " ".join(m.value for m in at.markdown)


def test_the_view_lives_in_the_url_and_survives_page_switches(app):
    app.query_params.update({"w": "0.5,0.25,0.25", "bench": "rev", "method": "linear"})
    at = _open(app, PAGES[1])
    assert at.session_state["mixture"] == pytest.approx([0.5, 0.25, 0.25])
    assert selectbox(at, "Benchmark").value == "rev"
    slider(at, "add").set_value(0.2)
    at.run()
    at.switch_page(PAGES[3])
    at.run()
    assert selectbox(at, "Benchmark").value == "rev"  # the benchmark is shared by the pages
    q = {k: v[0] if isinstance(v, list) else v for k, v in at.query_params.items()}
    assert q["bench"] == "rev" and q["method"] == "linear" and "lab" not in q  # the demo lab needs no ?lab=
    assert [float(x) for x in q["w"].split(",")] == pytest.approx(at.session_state["mixture"], abs=1e-5)


def test_a_bad_url_is_said_and_opens_the_default_view(app):
    app.query_params.update({"w": "1,nan", "bench": "nope", "params": "[1]", "method": "ties"})
    at = _open(app, PAGES[0])  # said on the first page the link opens
    shown = " ".join(w.value for w in at.warning)
    assert "not a list of non\\-negative weights" in shown and "not a JSON object" in shown
    assert at.session_state["mixture"] == pytest.approx([1 / 3] * 3)
    fresh = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    fresh.query_params.update({"bench": "nope", "method": "dare_ties"})
    at = _open(fresh, PAGES[0])  # the Lab page shows the benchmark and method too (its results): said there
    shown = " ".join(w.value for w in at.warning)
    assert "no benchmark nope" in shown and "No cached proxy scores for dare\\_ties" in shown
    app2 = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    app2.query_params.update({"w": "0.5,0.5"})  # K=2 weights for a K=3 lab
    at2 = _open(app2, PAGES[0])
    assert "gives 2 weights\\, the lab has 3 experts" in " ".join(w.value for w in at2.warning)


def test_the_lab_page_scores_checkpoints_and_pages_say_what_is_missing(app, tmp_path, monkeypatch):
    """A lab a researcher brings (no scores): the pages say what is missing and how to fill it; the Lab
    page's button scores the base, experts and true mixtures through the engine's cache."""
    import shutil

    from views.jobs import worker

    lab = tmp_path / "k3"
    shutil.copytree(DEMO_LAB, lab, ignore=shutil.ignore_patterns(".mixlab", "evaluations.jsonl", "true"))
    head, *trues = (DEMO_LAB / "lab.toml").read_text().split("[[true_mixtures]]")
    # two true mixtures, each kept with its first seed only (demo-k3 trains every mixture twice)
    trues = [re.sub(r'paths = \["(true/[^"]+)", "[^"]+"\]', r'path = "\1"', t) for t in trues[:2]]
    (lab / "lab.toml").write_text("[[true_mixtures]]".join([head, *trues]))
    for t in trues:
        for folder in re.findall(r'"(true/[^"]+)"', t):  # path = "…" or replicates' paths = ["…", "…"]
            shutil.copytree(DEMO_LAB / folder, lab / folder)
    monkeypatch.setenv("MIXLAB_CACHE", str(tmp_path / "empty.sqlite"))
    app.query_params["lab"] = str(lab)
    at = _open(app, PAGES[3])
    info = " ".join(i.value for i in at.info)
    assert "The base, 3 experts, 2 true mixtures have no scores yet" in info and "--checkpoints" in info
    at.switch_page(PAGES[0])
    at.run()
    next(b for b in at.button if b.label == "Score checkpoints").click()
    at.run()
    assert not at.exception
    job = worker().wait(worker().jobs[-1], timeout=300)
    assert job.state == "done", job.error
    assert {(e.kind, e.label) for e in job.result} >= {("base", "base"), ("expert", "add"), ("true", "rev12_sort88")}
    at.run()
    assert not any("no scores yet" in i.value for i in at.info)


def frame(at, column: str):
    """The first table on the page with ``column`` (AppTest does not expose a dataframe's key)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _after(at, heading: str) -> list:
    """The main area's elements after the subheader ``heading``, in page order."""

    def walk(node):
        for child in getattr(node, "children", {}).values():
            yield child
            yield from walk(child)

    seen, out = False, []
    for e in walk(at.main):
        if getattr(e, "type", "") == "subheader" or e.__class__.__name__ == "Subheader":
            seen = seen or e.value == heading
        elif seen:
            out.append(e)
    return out


def test_search_page_runs_a_search_and_shows_the_winner_beside_its_baselines(app):
    from mixlab.search import Objective
    from views.jobs import worker
    from views.state import engine
    from views.text import escape

    at = _open(app, "views/7_search.py")
    at.number_input(key="search_trials").set_value(4)
    at.selectbox(key="search_sampler").set_value("random")
    at.multiselect(key="search_objectives").set_value(["mean"])
    next(b for b in at.button if b.label == "Search").click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    job = worker().wait(worker().jobs[-1], timeout=300)
    assert job.state == "done", job.error
    at.run()
    result = job.result
    said = f"objective **{escape('mean of add, rev, sort')}**"  # not add=0.333333,rev=0.333333,…
    assert any(said in m.value for m in at.markdown), [m.value for m in at.markdown]
    table = frame(at, "test rev")
    best = result.best[0]
    assert table["test rev"].iloc[0] == pytest.approx(best["test"]["rev"], abs=1e-4)
    shown = table["test objective (mean of add, rev, sort)"]
    # the winner's test objective, ± 2 binomial SEs computed here by hand (n: each benchmark's examples)
    p = [best["test"][b] for b in ("add", "rev", "sort")]
    n = [len((DEMO_LAB / "data" / f"{b}.jsonl").read_text().splitlines()) for b in ("add", "rev", "sort")]
    se = (sum(x * (1 - x) / m for x, m in zip(p, n)) / 9) ** 0.5
    assert shown.iloc[0] == f"{sum(p) / 3:.4f} ± {2 * se:.4f}"
    baselines = list(table.candidate)[1:]
    assert baselines[0] == "uniform" and baselines[1].startswith("best expert (")
    assert any(c.startswith("best of ") for c in baselines) and any(
        c.startswith("nearest trained mixture (") for c in baselines
    )
    uniform = next(r for r in result.baselines if r["candidate"] == "uniform")
    assert uniform["test_objective"][0] == pytest.approx(
        Objective.parse("mean", engine().lab.benchmarks).value(uniform["test"], {b: True for b in uniform["test"]})
    )
    picker = at.selectbox(key="search_pick")
    assert picker.options[0].startswith("add ") and " · rev " in picker.options[0]  # the weights, not 0
    studies = frame(at, "study")
    assert result.study in list(studies.study) and int(studies.set_index("study").loc[result.study, "trials"]) == 4
    assert len(_charts(at)) >= 4  # history, importance, slice, best weights
    next(b for b in at.button if b.label == "Select this mixture").click()
    at.run()
    assert at.session_state["mixture"] == pytest.approx([best["weights"][n] for n in ["add", "rev", "sort"]], abs=1e-5)
    at.text_area(key=f"search_note:{result.study}").set_value("first look at demo-k3")
    at.button(key="search_note_save").click().run()
    from mixlab.search import study_file, study_note

    assert study_note(study_file(engine()), result.study) == "first look at demo-k3"
    at.switch_page(PAGES[0]).run()
    jobs = frame(at, "job")
    assert "search mean of add, rev, sort (random, 4 trials)" in list(jobs.job) and "done" in list(jobs.state)


def test_recycling_compare_shows_its_progress_and_result_below_it_and_says_how_it_found_its_merge(app):
    import os
    from pathlib import Path

    import optuna
    from optuna.distributions import FloatDistribution

    from views.jobs import worker

    # a study of another lab in the same search.sqlite ($MIXLAB_CACHE is one file for every lab): not listed here
    path = Path(os.environ["MIXLAB_CACHE"]).parent / "search.sqlite"
    other = optuna.create_study(study_name="of-demo-k3", storage=f"sqlite:///{path}", direction="maximize")
    other.set_user_attr("mixlab", {"lab": "demo-k3", "models": "x", "sampler": "random", "objectives": ["rev=1"]})
    trial = optuna.trial.create_trial(
        params={"u0": 0.5}, distributions={"u0": FloatDistribution(0, 1)}, value=0.5,
        user_attrs={"weights": [0.2, 0.3, 0.5]},
    )  # fmt: skip
    other.add_trial(trial)
    app.query_params["lab"] = str(DEMO_LAB.parent / "demo-recycle")
    at = _open(app, "views/7_search.py")
    assert not at.error and not any(c.value.startswith("Every search of this lab") for c in at.caption)
    assert frame(at, "checkpoints").candidate.iloc[-1] == "searched (cmaes)"  # the shipped table
    # the command it names gives that table again: the recorded settings (without them it would search anew)
    assert any("demo-recycle --trials 140 --space sparse --start" in c.value for c in at.caption)
    at.button(key="recycle_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    job = worker().wait(worker().jobs[-1], timeout=300)
    assert job.state == "done", job.error
    at.run()
    below = _after(at, "Checkpoint recycling")
    done = [e.value.replace("\\", "") for e in below if e.__class__.__name__ == "Success"]  # unescaped
    assert any(
        "replayed the 140 points recorded in recycle.json" in d and "0 new scores in the cache" in d for d in done
    ), done  # drawn below the Compare button: the panel there polled the job to its end
    said = " ".join(m.value for m in at.markdown)
    assert "**worse** than the best single checkpoint (0.5850 vs 0.6067, -0.0217; paired 95% CI [" in said
    assert "**within noise** of the greedy soup (0.5850 vs 0.5867, -0.0017" in said and "the uniform average" in said
    table = frame(at, "checkpoints")
    assert list(table.candidate) == ["best single checkpoint", "uniform average", "greedy soup", "searched (cmaes)"]
    at.switch_page(PAGES[0]).run()
    assert any(j.startswith("recycling 14 checkpoints") for j in frame(at, "job").job)


def test_recycling_with_layer_groups_shows_each_checkpoints_weight_per_group(app):
    """The Recycling section's "Layer groups": a search of 2 trials with 2 groups (block 0, block 1 of the demo's
    Llama) ends with a table of each checkpoint's weight per group, whose mean is the bar chart's weight."""
    from views.jobs import worker

    app.query_params["lab"] = str(DEMO_LAB.parent / "demo-recycle")
    at = _open(app, "views/7_search.py")
    assert at.checkbox(key="recycle_sparse").value  # the default: recycle.json's search settings
    at.number_input(key="recycle_trials").set_value(2)
    at.number_input(key="recycle_groups").set_value(2)
    at.checkbox(key="recycle_sparse").uncheck()
    at.run()
    at.button(key="recycle_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    job = worker().wait(worker().jobs[-1], timeout=1200)
    assert job.state == "done", job.error
    assert job.description.endswith("2 trials, 2 layer groups)")
    at.run()
    assert not at.exception
    groups = frame(at, "block 0")
    assert list(groups.columns) == ["block 0", "block 1"]
    searched = job.result.rows[-1]
    means = groups.mean(axis=1)
    assert means[means > 0].to_dict() == pytest.approx(searched["weights"], abs=1e-4)
    assert "new study recycle-2t-" in job.result.origin


def test_pages_poll_only_while_a_job_runs(monkeypatch):
    """An idle page does not rerun: the progress fragment gets run_every only while its job is active."""
    import views.jobs as shared

    seen = []

    def fragment(fn, run_every=None):
        seen.append(run_every)
        return lambda: None

    monkeypatch.setattr(shared.st, "fragment", fragment)
    job = type("J", (), {"active": True})()
    monkeypatch.setattr(shared, "current_job", lambda: job)
    shared.job_panel()
    job.active = False
    shared.job_panel()
    monkeypatch.setattr(shared, "current_job", lambda: None)
    shared.job_panel()
    assert seen == [0.5, None]


def test_a_first_evaluation_says_its_start_up_stages_and_cancels_between_them():
    import threading

    from mixlab.errors import Cancelled
    from views.jobs import _stages

    class Eng:
        loaded = False

        @property
        def model(self):
            Eng.loaded = True

    said, cancel = [], threading.Event()
    _stages(Eng(), lambda d, t, m: said.append(m), cancel)
    assert (
        said
        == [
            "importing the model stack",
            "building the merge kernels (first run only)",
            "loading the base and the experts",
        ]
        and Eng.loaded
    )
    said.clear()
    Eng.loaded = False

    def progress(d, t, m):
        said.append(m)
        cancel.set()  # cancel pressed during the first stage

    with pytest.raises(Cancelled):
        _stages(Eng(), progress, cancel)
    assert said == ["importing the model stack"] and not Eng.loaded


def test_every_page_runs_on_the_recycling_lab(app):
    """14 checkpoints: the K-gon views, the Search page and the Pareto page work there too."""
    app.query_params["lab"] = str(DEMO_LAB.parent / "demo-recycle")
    at = _open(app, PAGES[0])
    for page in PAGES[1:]:
        at.switch_page(page)
        at.run()
        assert not at.exception and not at.error, (page, [e.value for e in at.error])
    at.switch_page(PAGES[1])
    at.session_state["searched"] = [{"generalist": 0.5, "rev-only": 0.5}]
    at.run()
    assert not at.exception


def test_the_lab_page_lists_every_sessions_jobs_and_resumes_a_stopped_one(app, tmp_path):
    import json
    import os

    from mixlab.store import Store
    from views.jobs import worker

    spec = {"mixtures": [[0.3, 0.3, 0.4]], "method": "linear", "params": {}, "benchmarks": ["rev-loss"]}
    Store(os.environ["MIXLAB_CACHE"]).put_job(
        {
            "id": "r1", "lab": "demo-k3", "kind": "proxy", "description": "linear at a restart", "state": "running",
            "spec": json.dumps(spec, sort_keys=True), "done": 0, "total": 1, "message": "", "error": None,
            "created": 1.0, "started": 1.0, "finished": None, "pid": 2**22 + 12345,  # a process that is gone
        }
    )  # fmt: skip
    at = _open(app, PAGES[0])
    table = next(d.value for d in at.dataframe if "job" in d.value.columns)
    assert list(table.state) == ["interrupted"] and list(table.job) == ["linear at a restart"]
    next(b for b in at.button if b.label == "Resume").click()
    at.run()
    assert not at.exception
    job = worker().wait(worker().jobs[-1], timeout=300)
    assert job.state == "done", job.error
    at.run()
    table = next(d.value for d in at.dataframe if "job" in d.value.columns)
    assert list(table.state) == ["done"]


def test_the_lab_page_cancels_a_running_job_of_any_process(app):
    import json
    import os

    from mixlab.store import Store

    store = Store(os.environ["MIXLAB_CACHE"])
    store.put_job(
        {
            "id": "c1", "lab": "demo-k3", "kind": "proxy", "description": "a long sweep", "state": "running",
            "spec": json.dumps({}), "done": 3, "total": 66, "message": "", "error": None,
            "created": 1.0, "started": 1.0, "finished": None, "pid": os.getpid(),  # alive: this process
        }
    )  # fmt: skip
    at = _open(app, PAGES[0])
    assert next(s for s in at.selectbox if s.key == "lab_cancel_pick").options == ["a long sweep (3/66)"]
    at.button(key="lab_cancel").click().run()
    assert not at.exception and store.cancel_requested("c1")


def test_the_lab_page_makes_a_lab_from_a_folder_only_inside_the_workspace(app, tiny_root, tmp_path, monkeypatch):
    import shutil

    root = tmp_path / "space" / "mine"
    shutil.copytree(tiny_root / "base", root / "base")
    shutil.copytree(tiny_root / "experts" / "rev", root / "experts" / "rev")
    shutil.copytree(tiny_root / "data", root / "data")

    def ask(at, folder):
        at.text_input(key="init_dir").set_value(str(folder))
        next(b for b in at.button if b.label == "Preview lab.toml").click()
        return at.run()

    monkeypatch.delenv("MIXLAB_WORKSPACE", raising=False)
    at = ask(_open(app, PAGES[0]), root)
    assert any("MIXLAB_WORKSPACE" in i.value and "lab init" in i.value for i in at.info)
    assert not at.code and not (root / "lab.toml").exists()  # nothing read, nothing written

    monkeypatch.setenv("MIXLAB_WORKSPACE", str(tmp_path / "space"))
    at = ask(at, tmp_path)  # outside the workspace
    assert any("is not inside the workspace" in e.value for e in at.error) and not at.code
    at = ask(at, root)
    (preview,) = [c.value for c in at.code if c.language == "toml"]
    assert 'path = "experts/rev"' in preview and 'evaluator = "choice"' in preview
    at.button(key="init_write").click().run()
    assert not at.exception and (root / "lab.toml").read_text().strip() == preview.strip()
    assert at.session_state.lab_path == str(root)


def _charts(at):
    def walk(node):
        for child in getattr(node, "children", {}).values():
            yield child
            yield from walk(child)

    return [json.loads(e.proto.config) for e in walk(at._tree) if getattr(e, "type", "") == "plotly_chart"]


def test_every_figure_downloads_as_png_or_svg_at_publication_size_and_tables_as_csv(app):
    """Figures: Plotly's own camera button, configured per the sidebar's format; tables: st.dataframe,
    whose toolbar downloads CSV. No page draws a figure or table any other way."""
    at = _open(app, PAGES[3])
    (config,) = _charts(at)
    assert config["toImageButtonOptions"] == {
        "format": "png", "filename": "demo-k3-pvt_scatter", "width": 800, "height": 500, "scale": 3
    }  # fmt: skip
    at.sidebar.radio(key="figure_format").set_value("svg").run()
    for page in PAGES[1:6]:
        at.switch_page(page).run()
        assert not at.exception
        for c in _charts(at):
            assert c["toImageButtonOptions"]["format"] == "svg" and c["toImageButtonOptions"]["scale"] == 1
    for page in (ROOT / "views").glob("*.py"):
        text = page.read_text()
        for other in ("line_chart(", "bar_chart(", "st.table(", "altair_chart(", "pyplot("):
            assert other not in text, (page.name, other)
        if page.name != "widgets.py":
            assert "plotly_chart(" not in text, page.name  # every figure goes through chart()


def test_the_lab_picker_opens_every_shipped_lab(app):
    at = _open(app, PAGES[0])
    picker = next(s for s in at.selectbox if s.key == "lab_shipped")
    assert {"demo-k3", "demo-k4", "demo-recycle"} <= set(picker.options)
    picker.set_value("demo-k4").run()
    assert not at.exception and at.session_state.lab_path.endswith("demo-k4")
    assert any(h.value == "demo-k4" for h in at.subheader)


def test_the_vision_language_lab_opens_from_the_picker_and_every_page_works(app):
    """cache/demo-vl, as shipped: its cached scores fill every page; the Simplex explorer shows images."""
    at = _open(app, PAGES[0])
    next(s for s in at.selectbox if s.key == "lab_shipped").set_value("demo-vl").run()
    assert any(h.value == "demo-vl" for h in at.subheader)
    assert any("Kept at the base by every merge" in md.value for md in at.markdown)
    for page in PAGES[1:]:
        at.switch_page(page).run()
        assert not at.exception and not at.error, (page, [e.value for e in at.error])
        assert not any("have no scores yet" in i.value for i in at.info), page  # the shipped cache is used
    at.switch_page(PAGES[3]).run()
    assert _charts(at)  # proxy vs true, from the shipped scores


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ({"w": "1e308,1e308,1e308"}, None),  # equal weights near the float maximum: the uniform mixture
        ({"w": "1e308,1e309,1"}, "not a list of non\\-negative weights"),  # 1e309 is inf
        (
            {"method": "linear", "params": "[" * 1500 + "]" * 1500},
            "is not a JSON object",
        ),  # deeper than Python recurses
        ({"method": "linear", "params": "[" * 100_000}, "\\(100\\,000 characters\\) is not a JSON object"),
    ],
    ids=["w-overflow", "w-inf", "params-deep", "params-long"],
)
def test_hostile_url_values_are_a_notice_on_every_page(app, query, said):
    app.query_params.update(query)
    at = _open(app, PAGES[0])
    shown = " ".join(w.value for w in at.warning)
    assert (said in shown) if said else not shown, shown
    assert len(shown) < 400  # one line, not the value echoed whole
    assert at.session_state["mixture"] == pytest.approx([1 / 3] * 3)
    for page in PAGES[1:] if "w" in query else PAGES[1:2]:  # the weights reach every page; params, the first
        at.switch_page(page).run()
        assert not at.exception, (page, [e.message for e in at.exception])


def test_an_over_long_lab_path_is_a_clear_error(app, tmp_path):
    app.query_params["lab"] = str(tmp_path / ("a" * 300) / "lab")
    for page in PAGES[:2]:
        at = _open(app, page)
        shown = " ".join(e.value for e in at.error)
        assert "File name too long" in shown, shown


def test_every_page_works_on_a_lab_without_benchmarks(app, tmp_path, monkeypatch):
    import re

    monkeypatch.delenv("MIXLAB_CACHE")
    lab = _lab_copy(tmp_path, scores=False)
    toml = (lab / "lab.toml").read_text()
    keep = re.split(r"\n(?=\[\[benchmarks\]\])", toml)[0]  # everything before the first benchmark
    keep = re.sub(r"(?ms)^\[\[true_mixtures\]\].*", "", keep)
    (lab / "lab.toml").write_text(keep)
    from mixlab.lab import load_lab

    assert load_lab(lab).benchmarks == []
    app.query_params["lab"] = str(lab)
    for page in PAGES:
        at = _open(app, page)
        assert not at.error, (page, [e.value for e in at.error])
        if page in (PAGES[1], PAGES[-1]):  # the pages that need a benchmark say why they show nothing
            assert any("This lab has no benchmarks" in i.value for i in at.info), page


def test_an_unreadable_image_in_an_image_benchmark_is_a_notice(app, tmp_path, monkeypatch):
    import shutil

    monkeypatch.delenv("MIXLAB_CACHE")
    lab = tmp_path / "vl"
    shutil.copytree(DEMO_LAB.parent / "demo-vl", lab, ignore=shutil.ignore_patterns(".mixlab", "exports"))
    for name in ("general", "ocr", "count", "chart"):
        first = json.loads((lab / "data" / f"{name}.jsonl").read_text().splitlines()[0])
        (lab / first["image"]).write_text("not a picture")
    app.query_params["lab"] = str(lab)
    at = _open(app, PAGES[1])
    shown = " ".join(w.value for w in at.warning)
    assert "not an image file PIL can read" in shown and "0000\\.png" in shown, shown


def replicated_lab(tmp_path):
    """demo-k3 whose every true mixture lists a second "replicate": the next mixture's checkpoint (so the
    ceiling is known by hand from the cached scores, and nothing is evaluated)."""
    import shutil

    src, root = DEMO_LAB.parent / "demo-k3", tmp_path / "replicated"
    root.mkdir()
    for part in ("base", "data", "experts", "true", "evaluations.jsonl"):
        (shutil.copytree if (src / part).is_dir() else shutil.copy)(src / part, root / part)
    text = (src / "lab.toml").read_text()
    text = re.sub(r'paths = \["(true/[^"]+)"(, "[^"]+")+\]', r'path = "\1"', text)  # seed 1 only, then pair by hand
    paths = re.findall(r'path = "(true/.+)"', text)
    for i, p in enumerate(paths):
        text = text.replace(f'path = "{p}"\n', f'paths = ["{p}", "{paths[(i + 1) % len(paths)]}"]\n', 1)
    (root / "lab.toml").write_text(text)
    return root, paths


def test_the_proxy_vs_true_page_shows_the_noise_ceiling_beside_rho_for_all_and_interior_points(app, tmp_path):
    from scipy import stats

    from mixlab.engine import Engine
    from mixlab.lab import load_lab

    root, paths = replicated_lab(tmp_path)
    single = Engine(load_lab(DEMO_LAB.parent / "demo-k3")).results("linear", {})
    true = single[(single.kind == "true") & (single.benchmark == "add") & (single.replicate == 1)].set_index("label")
    labels = [t for t in true.index]  # lab order
    first = true.loc[labels, "score"].to_numpy()
    second = np.roll(first, -1)  # replicate 2 of mixture i is mixture i+1's checkpoint
    app.query_params["lab"] = str(root)
    app.query_params["bench"] = "add"
    at = _open(app, PAGES[3])
    shown = {m.label: m.value for m in at.metric}
    assert shown["Noise ceiling"] == f"{stats.spearmanr(first, second).statistic:+.2f}"
    assert any("ceiling " in c.value and f"(n={len(paths)})" in c.value for c in at.caption)
    both = next(d.value for d in at.dataframe if list(d.value.columns)[:2] == ["mixtures", "summary"])
    assert list(both.mixtures) == ["all", "all", "interior", "interior"]
    assert all("ceiling +" in c or "ceiling -" in c for c in both["noise ceiling"])
    next(r for r in at.radio if r.label == "Mixtures").set_value("interior").run()
    assert not at.exception
    inner = [i for i, lab in enumerate(labels) if all(w > 0 for w in true.loc[lab, ["add", "rev", "sort"]])]
    shown = {m.label: m.value for m in at.metric}
    assert shown["Mixtures (n)"] == str(len(inner))


def first_seeds_only(src: Path, dst: Path) -> Path:
    """A copy of a shipped lab whose true mixtures list only their first seed (every shipped lab with true
    mixtures trains each twice)."""
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".mixlab", "exports"))
    toml = (dst / "lab.toml").read_text()
    (dst / "lab.toml").write_text(re.sub(r'paths = \["(true/[^"]+)", "[^"]+"\]', r'path = "\1"', toml))
    return dst


def test_without_replicates_the_page_says_the_ceiling_is_unknown(app, tmp_path):
    app.query_params["lab"] = str(first_seeds_only(DEMO_LAB.parent / "demo-k4", tmp_path / "k4"))
    at = _open(app, PAGES[3])
    assert {m.label: m.value for m in at.metric}[
        "Noise ceiling"
    ] == "—"  # the caption says why ("unknown" was cut to "unk…" at 1440 px)
    assert any("no replicates: ceiling unknown" in c.value for c in at.caption)


@pytest.mark.parametrize("page", [PAGES[1], PAGES[2]])
def test_a_large_pools_weights_are_one_table_not_a_slider_each(app, page):
    """demo-recycle has 14 checkpoints: the Simplex and Merge pages give one table of weights (the selected
    mixture's, in the lab's order) and a bar per weight, and no weight sliders."""
    from mixlab.engine import Engine
    from mixlab.lab import load_lab

    names = Engine(load_lab(DEMO_LAB.parent / "demo-recycle")).names
    app.query_params["lab"] = str(DEMO_LAB.parent / "demo-recycle")
    weights = [0.0] * len(names)
    weights[3], weights[7] = 0.75, 0.25
    app.session_state["mixture"] = weights
    at = _open(app, page)
    assert not [s for s in at.slider if s.label in names]
    (table,) = [t for t in at.data_editor if "expert" in t.value.columns]
    assert list(table.value.expert) == names
    assert table.value.weight.tolist() == pytest.approx(weights)


def _stored_study(path, name: str, engine, values: list[float], weights: list[list[float]]) -> None:
    """A finished study of ``engine``'s lab written straight into search.sqlite (no evaluation needed)."""
    import optuna
    from optuna.distributions import FloatDistribution

    study = optuna.create_study(study_name=name, storage=f"sqlite:///{path}", direction="maximize")
    study.set_user_attr(
        "mixlab", {"lab": engine.lab.name, "models": engine.models_fp, "sampler": "random", "objectives": ["rev=1"]}
    )
    dist = {f"u{i}": FloatDistribution(0, 1) for i in range(3)}
    for v, w in zip(values, weights):
        study.add_trial(
            optuna.trial.create_trial(
                params={f"u{i}": 0.5 for i in range(3)}, distributions=dist, value=v, user_attrs={"weights": w}
            )
        )


def test_a_study_has_a_contour_plot_and_compares_with_another(app):
    """Two stored studies of demo-k3: the Search page draws the chosen one's contour over two weights (the
    most important first) and both studies' best-so-far lines side by side, with a row each."""
    import os
    from pathlib import Path

    from mixlab.engine import Engine
    from mixlab.lab import load_lab

    eng = Engine(load_lab(DEMO_LAB))
    path = Path(os.environ["MIXLAB_CACHE"]).parent / "search.sqlite"
    rng = np.random.default_rng(0)
    w = rng.dirichlet([1, 1, 1], size=8).tolist()
    _stored_study(path, "first", eng, [x[1] for x in w], w)  # the objective is the weight of rev
    _stored_study(path, "second", eng, [0.2, 0.1, 0.5, 0.4], w[:4])
    at = _open(app, "views/7_search.py")
    assert not at.error, [e.value for e in at.error]
    figures = _figures(at)
    contour = [f for f in figures if any(t.get("type") == "contour" for t in f["data"])]
    assert len(contour) == 1
    cx, cy = at.selectbox(key="search_cx:second").value, at.selectbox(key="search_cy:second").value
    assert {cx, cy} < {"add", "rev", "sort"} and cx != cy
    compared = [f for f in figures if [t.get("name") for t in f["data"]] == ["second", "first"]]
    assert len(compared) == 1
    np.testing.assert_allclose(_array(compared[0]["data"][0]["y"]), [0.2, 0.2, 0.5, 0.5])  # best so far, by hand
    np.testing.assert_allclose(_array(compared[0]["data"][1]["y"]), np.maximum.accumulate([x[1] for x in w]))
    listed, compared_rows = [d.value for d in at.dataframe if "best" in d.value.columns]
    assert list(listed.study) == ["first", "second"] and list(compared_rows.study) == ["second", "first"]
    assert compared_rows.best.tolist() == pytest.approx([0.5, max(x[1] for x in w)], abs=1e-4)
