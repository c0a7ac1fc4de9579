"""The session's view state, one home each: the open lab (and its engine), the selected mixture, the
benchmark and proxy method every page shows, where evaluations run; and the URL that mirrors them.

Widgets are derived from this state (their keys carry the value they were drawn with, so no widget can
hold on to a stale value and re-apply it), and app.py mirrors it in the URL
(?lab=…&w=…&bench=…&method=…&params=…) on every run, so a reload or a shared link opens the same view.
Nothing in a URL runs code: weights are parsed as numbers, params as a JSON object, names are matched
against the lab's own."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from mixlab.analysis import with_lab_mean
from mixlab.demo import DEMO_LAB
from mixlab.engine import Engine
from mixlab.errors import MixlabError
from mixlab.lab import load_lab
from mixlab.run.executors import dashboard_backends
from mixlab.simplex import Mixture, validate_weights
from mixlab.summary import lab_summary
from views.text import clip, code, escape, show_error

MIXTURE = "mixture"  # the selected weights (list of floats, Σ = 1)
REV = "mixture_rev"  # bumped on every change of the mixture; the weight sliders' keys include it
BENCH = "bench"  # the benchmark every page shows (a lab benchmark or "mean")
METHOD = "proxy_method"  # (method, params) of the proxy scores shown
BACKEND = "backend"  # where this session's evaluations run (mixlab.run.executors)
NOTICES = "url_notices"  # what was wrong with the URL, said once
READ_KEY = "read_key"  # the open lab's Engine.read_key, taken once per page run (engine())
MAX_URL_PARAMS = 4096  # characters of ?params= read: a method's parameters are a few short numbers


def read_url() -> None:
    """Once per session: the view the URL names becomes the session's state. Nothing in a URL runs code:
    weights are parsed as numbers, params as a JSON object, names are matched against the lab's own."""
    ss = st.session_state
    if ss.get("_url_read"):
        return
    ss._url_read = True
    q = st.query_params
    ss.lab_path = q.get("lab", str(DEMO_LAB))
    ss[NOTICES] = []
    if "w" in q:
        try:  # the library's own check and normalisation (finite, ≥ 0, some weight > 0; no overflow)
            ss.url_weights = validate_weights([float(x) for x in q["w"].split(",")], normalize=True)
        except (ValueError, MixlabError):
            ss[NOTICES].append(f"?w={clip(q['w'])} is not a list of non-negative weights; the uniform mixture is shown")
    if "bench" in q:
        ss[BENCH] = q["bench"]
    if "method" in q:
        text = q.get("params", "{}")
        try:
            if len(text) > MAX_URL_PARAMS:
                raise ValueError
            params = json.loads(text)
            if not isinstance(params, dict):
                raise ValueError
            ss[METHOD] = (q["method"], params)
        except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python recurses
            ss[NOTICES].append(f"?params={clip(text)} is not a JSON object; the method's defaults are shown")


def view_params() -> dict[str, str]:
    """The URL that names this session's view (what :func:`read_url` reads back)."""
    ss = st.session_state
    out = {} if lab_path() == str(DEMO_LAB) else {"lab": lab_path()}
    if MIXTURE in ss:
        out["w"] = ",".join(f"{x:.6g}" for x in ss[MIXTURE])
    if ss.get(BENCH):
        out["bench"] = ss[BENCH]
    if ss.get(METHOD):
        method, params = ss[METHOD]
        out["method"] = method
        if params:
            out["params"] = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return out


def write_url() -> None:
    """Mirror the view in the address bar (st.navigation drops query parameters on a page switch)."""
    want = view_params()
    if st.query_params.to_dict() != want:
        st.query_params.from_dict(want)


def lab_path() -> str:
    if "lab_path" not in st.session_state:
        read_url()
    return st.session_state.lab_path


def open_lab(path: str) -> None:
    """Switch the session to another lab: the mixture, benchmark and method start afresh there."""
    ss = st.session_state
    ss.lab_path = path
    for key in (MIXTURE, BENCH, METHOD, "url_weights", "region"):
        ss.pop(key, None)


@st.cache_resource(show_spinner="Opening the lab…")
def _engine(path: str, mtime: float) -> Engine:
    return Engine(load_lab(path))


def _mtime(path: str) -> float:
    try:
        toml = Path(path) / "lab.toml" if Path(path).is_dir() else Path(path)
        return toml.stat().st_mtime if toml.exists() else 0.0
    except (OSError, ValueError):  # a name too long, a NUL byte: load_lab says what is wrong with it
        return 0.0


def lab_name() -> str:
    """The open lab's name, once engine() has opened it this run (its checks and notices are engine()'s)."""
    path = lab_path()
    return _engine(path, _mtime(path)).lab.name


def engine() -> Engine:
    """The open lab's engine, or an error on the page and a stop."""
    path = lab_path()
    try:
        eng = _engine(path, _mtime(path))
        lab_summary(eng)  # the experts checked now (loaded, or as kept when last loaded), so a bad lab fails here
    except MixlabError as e:
        st.error(f"Cannot open the lab at {code(path)}")
        show_error("", e)
        st.info("Pick another lab on the **Lab** page (the demo lab is at `cache/demo-k3`).")
        st.stop()
    ss = st.session_state
    ss[READ_KEY] = eng.read_key()  # once per page run: every view() of this run reads the cache as it is now
    if MIXTURE not in ss or len(ss[MIXTURE]) != len(eng.names):
        url_w = ss.pop("url_weights", None)
        if url_w is not None and len(url_w) != len(eng.names):
            ss.setdefault(NOTICES, []).append(
                f"the URL gives {len(url_w)} weights, the lab has {len(eng.names)} experts; the uniform mixture is shown"
            )
            url_w = None
        set_mixture(url_w if url_w is not None else [1.0] * len(eng.names))
    for notice in [*eng.store.notices, *ss.pop(NOTICES, [])]:
        st.warning(escape(notice))
    return eng


def mixture(eng: Engine) -> Mixture:
    return Mixture.of(eng.names, st.session_state[MIXTURE], normalize=True)


def set_mixture(weights) -> None:
    """The one way the selected mixture changes (a click, a slider, the URL)."""
    w = np.clip(np.asarray(weights, dtype=float), 0, None)
    try:
        st.session_state[MIXTURE] = validate_weights(w, normalize=True)
    except MixlabError:  # nothing left to normalise (every weight 0): the uniform mixture
        st.session_state[MIXTURE] = [1.0 / len(w)] * len(w)
    st.session_state[REV] = st.session_state.get(REV, 0) + 1  # every weight slider is drawn afresh


def view(eng: Engine, name, compute):
    """``compute()``, a view of the lab's cached scores, made once per version of them (Engine.read_view)
    and shared by the sessions: read-only. The version is the one engine() read at the start of this run."""
    return eng.read_view(name, compute, st.session_state.get(READ_KEY))


RESULTS = "results, with the mean"


def results(eng: Engine) -> pd.DataFrame:
    """Every cached score of the lab (all methods), with the pseudo-benchmark 'mean' of the
    higher-is-better benchmarks (a view(): read-only)."""
    return view(eng, RESULTS, lambda: with_lab_mean(eng.results(), eng.lab.benchmarks))


def results_ready(eng: Engine) -> bool:
    """Whether :func:`results` is made for this run's read key (else it reads the cache: about a second on a
    lab of thousands of scores, once per server process and version of the scores)."""
    return eng.has_view(RESULTS, st.session_state.get(READ_KEY))


def winners() -> list[dict] | None:
    """This session's latest single-objective search's winners (weights, dev, test), or None."""
    front = st.session_state.get("searched_front")
    return front["best"] if front and len(front["objectives"]) == 1 else None


def backend_name() -> str:
    """Where this session's evaluations run: its choice on the Lab page, else $MIXLAB_BACKEND, else local."""
    offered = dashboard_backends()
    name = st.session_state.get(BACKEND) or os.environ.get("MIXLAB_BACKEND", "local")
    return name if name in offered else "local"
