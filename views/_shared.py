"""What every page shares: the open lab's engine, the background worker, the selected mixture, and
small widgets. Thin: all computing happens in mixlab/."""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from mixlab.analysis import MEAN, with_lab_mean
from mixlab.backend import Job, Worker
from mixlab.demo import DEMO_LAB
from mixlab.engine import Engine
from mixlab.errors import MixlabError
from mixlab.lab import load_lab
from mixlab.merge import get_method, methods
from mixlab.simplex import Mixture, rebalance

MIXTURE = "mixture"  # session_state key: the selected weights (list of floats)


@st.cache_resource(show_spinner="Opening the lab…")
def _engine(path: str, mtime: float) -> Engine:
    return Engine(load_lab(path))


@st.cache_resource
def worker() -> Worker:
    return Worker()


_MD_SPECIAL = re.compile("([" + re.escape(string.punctuation) + "])")


def escape(text: object) -> str:
    """Text from a user, a URL or a file, made inert in markdown: every ASCII punctuation mark is
    backslash-escaped (CommonMark), so no link, image, directive or emphasis can be injected."""
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def code(text: object) -> str:
    """``text`` as an inline code span that no backtick inside it can close."""
    text = str(text).replace("\n", " ")
    fence = "`" * (max((len(m) for m in re.findall("`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}"


def show_error(prefix: str, e: Exception) -> None:
    """A library error on the page: its message is the user's data (paths, names), so it is escaped."""
    st.error(f"{prefix}: {escape(e)}" if prefix else escape(e))


def lab_path() -> str:
    if "lab_path" not in st.session_state:
        st.session_state.lab_path = st.query_params.get("lab", str(DEMO_LAB))
    return st.session_state.lab_path


def engine() -> Engine:
    """The open lab's engine, or an error on the page and a stop."""
    path = lab_path()
    try:
        eng = _engine(path, _mtime(path))
        eng.experts  # noqa: B018 - load and check the experts now, so a bad lab fails here
    except MixlabError as e:
        st.error(f"Cannot open the lab at {code(path)}")
        show_error("", e)
        st.info("Pick another lab on the **Lab** page (the demo lab is at `cache/demo-k3`).")
        st.stop()
    if MIXTURE not in st.session_state or len(st.session_state[MIXTURE]) != len(eng.names):
        st.session_state[MIXTURE] = [1.0 / len(eng.names)] * len(eng.names)
    for notice in eng.store.notices:
        st.warning(escape(notice))
    return eng


def mixture(eng: Engine) -> Mixture:
    return Mixture.of(eng.names, st.session_state[MIXTURE], normalize=True)


def set_mixture(weights) -> None:
    w = np.clip(np.asarray(weights, dtype=float), 0, None)
    st.session_state[MIXTURE] = list(w / w.sum())
    for i, x in enumerate(st.session_state[MIXTURE]):  # keep the weight inputs in step
        st.session_state[f"w_{i}"] = round(float(x), 4)


def point_data(point: dict) -> list[float] | None:
    """A selected point's customdata as a list (Plotly sends typed arrays as {"0": …, "1": …})."""
    cd = point.get("customdata")
    if isinstance(cd, dict):
        cd = [cd[k] for k in sorted(cd, key=int)]
    return None if cd is None else [float("nan") if v is None else float(v) for v in cd]


def _rebalance(i: int, k: int) -> None:
    """Weight i was edited: the others rescale so the mixture stays on the simplex (mixlab.simplex.rebalance)."""
    set_mixture(rebalance(st.session_state[MIXTURE], i, st.session_state[f"w_{i}"]))


def weight_inputs(eng: Engine) -> None:
    """One slider per expert; editing one rescales the others (Σw = 1 always)."""
    k = len(eng.names)
    for i, name in enumerate(eng.names):
        if f"w_{i}" not in st.session_state:
            st.session_state[f"w_{i}"] = round(float(st.session_state[MIXTURE][i]), 4)
        st.slider(name, 0.0, 1.0, step=0.01, key=f"w_{i}", on_change=_rebalance, args=(i, k), format="%.2f")


def results(eng: Engine) -> pd.DataFrame:
    """Every cached score of the lab (all methods), with the pseudo-benchmark 'mean' of the
    higher-is-better benchmarks; recomputed only when the cache changes."""
    eng.refresh()
    trues = tuple(sorted(eng.true_fingerprints.items()))
    return _results(eng, eng.lab.root.as_posix(), eng.models_fp, trues, eng.store.version())


@st.cache_resource(max_entries=8)
def _results(_eng: Engine, root: str, models_fp: str, trues: tuple, version: tuple) -> pd.DataFrame:
    """Keyed by lab, expert set, true checkpoints and cache version (the engine itself is not hashed)."""
    return with_lab_mean(_eng.results(), _eng.lab.benchmarks)


def _mtime(path: str) -> float:
    toml = Path(path) / "lab.toml" if Path(path).is_dir() else Path(path)
    return toml.stat().st_mtime if toml.exists() else 0.0


def benchmark_options(df: pd.DataFrame, eng: Engine) -> list[str]:
    names = [b.name for b in eng.lab.benchmarks]
    return ([MEAN] if MEAN in set(df.benchmark) else []) + names


def method_params_inputs(key: str) -> tuple[str, dict]:
    """A method picker and one input per declared parameter (from the merge registry)."""
    names = [m.name for m in methods()]
    method = st.selectbox(
        "Merge method", names, key=f"{key}_method", help="; ".join(f"{m.name}: {m.help}" for m in methods())
    )
    params = {}
    for p in get_method(method).params:
        pkey = f"{key}_{method}_{p.name}"
        if p.kind is bool:
            params[p.name] = st.checkbox(p.name, value=bool(p.default), help=p.help, key=pkey)
        elif p.kind is int:
            params[p.name] = int(
                st.number_input(
                    p.name,
                    value=int(p.default),
                    min_value=int(p.low or 0),
                    max_value=int(p.high) if p.high is not None else None,
                    step=1,
                    help=p.help,
                    key=pkey,
                )
            )
        else:
            lo = (p.low or 0.0) + (0.01 if p.low_open else 0.0)
            params[p.name] = float(
                st.number_input(
                    p.name,
                    value=float(p.default),
                    min_value=float(lo),
                    max_value=float(p.high) if p.high is not None else None,
                    step=0.05,
                    help=p.help,
                    key=pkey,
                )
            )
    return method, params


def proxy_method_picker(df: pd.DataFrame, key: str, container=st) -> tuple[str, dict]:
    """Pick among the (method, params) pairs that have cached proxy scores (linear when none)."""
    proxy = df[df.kind == "proxy"] if len(df) else df
    options = sorted({(m, json.dumps(p, sort_keys=True)) for m, p in zip(proxy.method, proxy.params)}) or [
        ("linear", "{}")
    ]
    i = container.selectbox(
        "Proxy merge method",
        range(len(options)),
        key=key,
        format_func=lambda i: f"{options[i][0]} {params_label(json.loads(options[i][1]))}",
    )
    return options[i][0], json.loads(options[i][1])


def of_method(df: pd.DataFrame, method: str, params: dict) -> pd.DataFrame:
    """Every non-proxy row, and the proxy rows of one (method, params)."""
    keep = [k != "proxy" or (m == method and p == params) for k, m, p in zip(df.kind, df.method, df.params)]
    return df[np.asarray(keep, dtype=bool)]  # a mask even when empty (df[[]] would select no columns)


def params_label(params) -> str:
    return json.dumps(params, sort_keys=True) if params else "defaults"


def submit_evaluation(eng: Engine, m: Mixture, method: str, params: dict, benchmarks: list[str] | None = None) -> Job:
    desc = f"{method} {params_label(params)} at {m.label()}"
    job = worker().submit(
        desc, lambda progress, cancel: eng.proxy(m, method, params, benchmarks, progress=progress, cancel=cancel)
    )
    st.session_state.last_job = job.id
    return job


def current_job() -> Job | None:
    jid = st.session_state.get("last_job")
    return next((j for j in worker().jobs if j.id == jid), None)


@st.fragment(run_every=0.5)
def job_panel() -> None:
    """Progress and a cancel button for this session's last job; reruns the page when it ends."""
    job = current_job()
    if job is None:
        return
    if job.active:
        st.progress(job.fraction, text=f"{job.state}: {job.description} — {job.message or 'starting…'}")
        if st.button("Cancel", key=f"cancel_{job.id}"):
            job.cancel()
        st.session_state.job_was_active = job.id
    else:
        if job.state == "done":
            st.success(f"Evaluated {job.description}: {len(job.result)} scores cached.")
        elif job.state == "cancelled":
            st.warning(f"Cancelled: {job.description}")
        else:
            st.error(f"Failed: {escape(job.description)}: {escape(job.error)}")
        if st.session_state.get("job_was_active") == job.id:
            st.session_state.job_was_active = None
            st.rerun()  # redraw the whole page with the new point
