"""Every page through streamlit's AppTest, on the shipped demo lab (its cache redirected to tmp)."""

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from mixlab.cli import DEMO_LAB

ROOT = DEMO_LAB.parents[1]

PAGES = [
    "views/1_lab.py",
    "views/2_simplex.py",
    "views/3_merge.py",
    "views/4_proxy_vs_true.py",
    "views/5_pareto.py",
    "views/6_experts.py",
]


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXLAB_CACHE", str(tmp_path / "cache.sqlite"))
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    return at


def _open(at, page):
    at.run()
    if page != PAGES[0]:
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs(app, page):
    at = _open(app, page)
    assert at.title[0].value
    assert not at.error, [e.value for e in at.error]


def test_lab_page_lists_experts_and_bad_lab_is_a_clear_error(app, tmp_path):
    at = _open(app, PAGES[0])
    experts = at.dataframe[0].value
    assert list(experts["expert"]) == ["add", "rev", "sort"]
    at.text_input(key="lab_input").set_value(str(tmp_path / "nowhere"))
    at.button[0].click()
    at.run()
    assert not at.exception
    assert any("no lab manifest" in e.value for e in at.error)


def test_injected_mixture_is_selected_and_weights_stay_on_the_simplex(app):
    app.session_state["mixture"] = [0.5, 0.25, 0.25]
    at = _open(app, PAGES[1])
    assert "`add` **0.500** · `rev` **0.250** · `sort` **0.250**" in [m.value for m in at.markdown]
    at.slider(key="w_0").set_value(0.8)
    at.run()
    w = at.session_state["mixture"]
    assert w[0] == pytest.approx(0.8) and sum(w) == pytest.approx(1.0) and w[1] == pytest.approx(w[2])


def test_benchmark_choice_changes_the_scores_shown(app):
    at = _open(app, PAGES[3])
    first = [m.value for m in at.metric]
    at.selectbox(key="pvt_bench").set_value("rev")
    at.run()
    assert not at.exception and [m.value for m in at.metric] != first


def test_merge_page_renders_registry_params(app):
    at = _open(app, PAGES[2])
    at.selectbox(key="merge_method").set_value("ties")
    at.run()
    labels = {n.label for n in at.number_input}
    assert {"density", "scale"} <= labels and any(c.label == "normalize" for c in at.checkbox)


def test_pareto_page_with_same_benchmark_warns(app):
    at = _open(app, PAGES[4])
    at.selectbox(key="pareto_y").set_value(at.selectbox(key="pareto_x").value)
    at.run()
    assert "two different benchmarks" in at.warning[0].value


def test_library_never_imports_streamlit():
    import subprocess
    import sys

    code = "import sys, mixlab.cli, mixlab.engine, mixlab.plots, mixlab.analysis, mixlab.backend, mixlab.diagnostics, mixlab.demo.build; print('streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_demo_lab_is_shipped():
    assert (DEMO_LAB / "lab.toml").is_file() and (DEMO_LAB / "evaluations.jsonl").is_file()


def test_k4_lab_projection_view(app):
    app.query_params["lab"] = str(DEMO_LAB.parent / "demo-k4")
    at = _open(app, PAGES[1])
    assert any("K=4" in c.value for c in at.caption)
    assert "`count` **0.250**" in " ".join(m.value for m in at.markdown)
