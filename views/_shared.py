"""What every page shares: the open lab's engine, the background worker, the selected mixture, and
small widgets. Thin: all computing happens in mixlab/."""

from __future__ import annotations

import json
import os
import re
import string
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from mixlab.analysis import MEAN, with_lab_mean
from mixlab.demo import DEMO_LAB
from mixlab.engine import Engine
from mixlab.errors import MixlabError
from mixlab.lab import load_lab
from mixlab.merge import get_method, methods
from mixlab.plots import BEST_STYLE
from mixlab.run.executors import dashboard_backends
from mixlab.run.jobs import Job, ProxyJob, Worker, recorder
from mixlab.scoring.request import Method, ProxyRequest
from mixlab.simplex import Mixture, rebalance, validate_weights

# The session's view state, one home each. Widgets are derived from it (their keys carry the value they
# were drawn with, so no widget can hold on to a stale value and re-apply it), and app.py mirrors it in the
# URL (?lab=…&w=…&bench=…&method=…&params=…) on every run, so a reload or a shared link opens the same view.
MIXTURE = "mixture"  # the selected weights (list of floats, Σ = 1)
REV = "mixture_rev"  # bumped on every change of the mixture; the weight sliders' keys include it
BENCH = "bench"  # the benchmark every page shows (a lab benchmark or "mean")
METHOD = "proxy_method"  # (method, params) of the proxy scores shown
BACKEND = "backend"  # where this session's evaluations run (mixlab.run.executors)
NOTICES = "url_notices"  # what was wrong with the URL, said once


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


MAX_URL_PARAMS = 4096  # characters of ?params= read: a method's parameters are a few short numbers
MAX_SHOWN = 80  # characters of a URL value echoed in a notice


def clip(text: str) -> str:
    """A value from a URL as a notice shows it: at most MAX_SHOWN characters."""
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + f"… ({len(text):,} characters)"


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
    ss = st.session_state
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


def point_data(point: dict) -> list[float] | None:
    """A selected point's customdata as a list (Plotly sends typed arrays as {"0": …, "1": …})."""
    cd = point.get("customdata")
    if isinstance(cd, dict):
        cd = [cd[k] for k in sorted(cd, key=int)]
    return None if cd is None else [float("nan") if v is None else float(v) for v in cd]


def _rebalance(i: int, key: str) -> None:
    """Weight i was edited: the others rescale so the mixture stays on the simplex (mixlab.simplex.rebalance)."""
    set_mixture(rebalance(st.session_state[MIXTURE], i, st.session_state[key]))


def weight_inputs(eng: Engine) -> None:
    """One slider per expert, drawn from the selected mixture; editing one rescales the others (Σw = 1)."""
    rev = st.session_state.get(REV, 0)
    for i, name in enumerate(eng.names):
        key = f"w_{i}_{rev}"
        value = round(float(st.session_state[MIXTURE][i]), 4)
        st.slider(name, 0.0, 1.0, value=value, step=0.01, key=key, on_change=_rebalance, args=(i, key), format="%.2f")


def _picked(state_key: str, widget_key: str, values: list | None = None) -> None:
    """A picker changed: its choice becomes the state (``values``: the widget holds an index into them)."""
    v = st.session_state[widget_key]
    st.session_state[state_key] = v if values is None else values[v]


def benchmark_picker(options: list[str], container=st, label: str = "Benchmark", help: str | None = None) -> str:
    """The benchmark every page shows: one choice shared by the pages and the URL. A lab without
    benchmarks has nothing to show here: the page says so and stops."""
    if not options:
        no_benchmarks()
    current = st.session_state.get(BENCH)
    if current not in options:
        if current is not None:
            st.warning(f"This lab has no benchmark {escape(clip(current))}; showing {escape(options[0])}.")
        current = options[0]
    st.session_state[BENCH] = current
    key = f"bench_pick:{current}"
    container.selectbox(
        label, options, index=options.index(current), key=key, on_change=_picked, args=(BENCH, key), help=help
    )
    return current


def no_benchmarks() -> None:
    """The notice of a page that needs benchmarks, on a lab without any; the page stops."""
    st.info("This lab has no benchmarks: add a `[[benchmarks]]` table to its lab.toml to score mixtures.")
    st.stop()


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
    try:
        toml = Path(path) / "lab.toml" if Path(path).is_dir() else Path(path)
        return toml.stat().st_mtime if toml.exists() else 0.0
    except (OSError, ValueError):  # a name too long, a NUL byte: load_lab says what is wrong with it
        return 0.0


def benchmark_options(df: pd.DataFrame, eng: Engine) -> list[str]:
    names = [b.name for b in eng.lab.benchmarks]
    return ([MEAN] if MEAN in set(df.benchmark) else []) + names


def method_params_inputs(key: str, defaults=None) -> tuple[str, dict]:
    """A method picker and one input per declared parameter (from the merge registry); ``defaults(method)``
    may give each parameter's starting value (e.g. the params the lab's cached proxies used)."""
    names = [m.name for m in methods()]
    shown = (st.session_state.get(METHOD) or ("linear", {}))[0]  # start from the method the pages show
    method = st.selectbox(
        "Merge method",
        names,
        index=names.index(shown) if shown in names else 0,
        key=f"{key}_method",
        help="; ".join(f"{m.name}: {m.help}" for m in methods()),
    )
    params = {}
    start = (defaults(method) if defaults else None) or {}
    for p in get_method(method).params:
        default = start.get(p.name, p.default)
        pkey = f"{key}_{method}_{p.name}"
        if p.kind is bool:
            params[p.name] = st.checkbox(p.name, value=bool(default), help=p.help, key=pkey)
        elif p.kind is int:
            params[p.name] = int(
                st.number_input(
                    p.name,
                    value=int(default),
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
                    value=float(default),
                    min_value=float(lo),
                    max_value=float(p.high) if p.high is not None else None,
                    step=0.05,
                    help=p.help,
                    key=pkey,
                )
            )
    return method, params


def proxy_method_picker(df: pd.DataFrame, eng: Engine, container=st) -> tuple[str, dict]:
    """Pick among the (method, params) pairs that have cached proxy scores (the lab's method first, linear
    when none): one choice shared by the pages and the URL."""
    proxy = df[df.kind == "proxy"] if len(df) else df
    found = {(m, json.dumps(p, sort_keys=True)) for m, p in zip(proxy.method, proxy.params)}
    lab_default = eng.resolve_method(None, {})
    options = sorted(found, key=lambda o: (o != (lab_default[0], json.dumps(lab_default[1], sort_keys=True)), o))
    options = [(m, json.loads(p)) for m, p in options] or [("linear", {})]
    current = st.session_state.get(METHOD)
    if current is not None and tuple(current) not in [tuple(o) for o in options]:
        st.warning(
            f"No cached proxy scores for {escape(clip(current[0]))} {escape(clip(params_label(current[1])))}; "
            f"showing {escape(options[0][0])}."
        )
        current = None
    index = 0 if current is None else [tuple(o) for o in options].index(tuple(current))
    st.session_state[METHOD] = options[index]
    key = f"method_pick:{options[index][0]}:{params_label(options[index][1])}"
    container.selectbox(
        "Proxy merge method",
        range(len(options)),
        index=index,
        key=key,
        format_func=lambda i: f"{options[i][0]} {params_label(options[i][1])}",
        on_change=_picked,
        args=(METHOD, key, options),
    )
    return options[index]


def of_method(df: pd.DataFrame, method: str, params: dict) -> pd.DataFrame:
    """Every non-proxy row, and the proxy rows of one (method, params)."""
    keep = [k != "proxy" or (m == method and p == params) for k, m, p in zip(df.kind, df.method, df.params)]
    return df[np.asarray(keep, dtype=bool)]  # a mask even when empty (df[[]] would select no columns)


def params_label(params) -> str:
    return json.dumps(params, sort_keys=True) if params else "defaults"


@st.cache_resource
def _warmup() -> threading.Thread:
    """Once per server process: the work the first evaluation would otherwise wait for (importing the
    model stack, building the fused merge kernels) starts in the background when the app opens."""

    def run() -> None:
        from mixlab.merge import fused
        from mixlab.names import import_stack

        import_stack()
        fused.available()

    thread = threading.Thread(target=run, name="mixlab-warmup", daemon=True)
    thread.start()
    return thread


def start_warmup() -> None:
    _warmup()


def _stages(eng: Engine, progress, cancel) -> None:
    """Report what a first evaluation waits for, stage by stage, and stop between stages on cancel."""
    from mixlab.errors import Cancelled
    from mixlab.merge import fused

    def warm() -> None:  # wait for the background warm-up, but let a cancel through every half second
        thread = _warmup()
        while thread.is_alive():
            if cancel.is_set():
                raise Cancelled("cancelled")
            thread.join(0.5)

    stages = (
        ("importing the model stack", warm),
        ("building the merge kernels (first run only)", fused.available),
        ("loading the base and the experts", lambda: eng.model),
    )
    for message, step in stages:
        if cancel.is_set():
            raise Cancelled("cancelled")
        progress(0, 0, message)
        step()


def submit_job(description: str, body, kind: str | None = None, spec: dict | None = None) -> Job:
    """Run ``body(progress, cancel)`` on the worker, after the start-up stages; the page shows its progress.
    With ``kind`` and ``spec`` the job is recorded in the lab's store (listed after a restart, resumable) and
    a second request for the same work while it runs joins it instead of running it twice."""
    eng = engine()

    def fn(progress, cancel):
        _stages(eng, progress, cancel)
        return body(progress, cancel)

    key = on_update = None
    if kind is not None:
        key = f"{eng.lab.root}:{kind}:{json.dumps(spec, sort_keys=True)}"
        on_update = recorder(eng.store, eng.lab.name, kind, spec)
    job = worker().submit(description, fn, key=key, on_update=on_update)
    st.session_state.last_job = job.id
    return job


def missing_scores_note(eng: Engine) -> None:
    """Say which checkpoints have no scores yet, and what fills them."""
    missing = eng.unscored()
    parts = (["the base"] if missing["base"] else []) + [
        f"{missing[k]} {label}{'' if missing[k] == 1 else 's'}"
        for k, label in (("expert", "expert"), ("true", "true mixture"))
        if missing[k]
    ]
    if parts:
        what = ", ".join(parts)
        st.info(
            f"{what[0].upper() + what[1:]} {'has' if parts == ['the base'] else 'have'} no scores yet: press **Score "
            f"checkpoints** on the Lab page, or run {code(f'python -m mixlab sweep {eng.lab.root} --checkpoints')}."
        )


def winners() -> list[dict] | None:
    """This session's latest single-objective search's winners (weights, dev, test), or None."""
    front = st.session_state.get("searched_front")
    return front["best"] if front and len(front["objectives"]) == 1 else None


def best_panel(best: dict, bench: str, key: str, marked: bool = True) -> None:
    """The answer on ``bench`` (mixlab.analysis.best_mixtures), each as its figure marks it (``marked``),
    with a button that selects it."""
    if not best:
        return
    st.markdown(f"**The answer on {escape(bench)}**" + (" (marked on the figure)" if marked else ""))
    for source, b in best.items():
        c1, c2 = st.columns([5, 1], vertical_alignment="center")
        c1.markdown(f"{BEST_STYLE[source][3]} {escape(b.describe())}")
        if c2.button("Select", key=f"{key}_best_{source}"):
            set_mixture(b.weights)
            st.rerun()


def stacking_columns(key: str, spec: list[int]) -> list:
    """Columns side by side on a wide screen that stack below 1280 px (a laptop with the sidebar open), each
    then the full width (our own fixed CSS): a headline metric never truncates, a figure is never crushed."""
    st.html(
        "<style>@media (max-width: 1280px) {"
        f".st-key-{key} [data-testid='stHorizontalBlock'] {{ flex-wrap: wrap; }}"
        f".st-key-{key} [data-testid='stColumn'] {{ min-width: 100%; flex: 1 1 100%; }}"
        "}</style>"
    )
    return st.container(key=key).columns(spec)


FIGURE_FORMATS = ("png", "svg")
# publication size: an 800×500 layout is a full-width (7 in) figure with 14 px type at 8.8 pt; PNG at 3× is 300 dpi
EXPORT_WIDTH, EXPORT_HEIGHT, EXPORT_SCALE, FONT_SIZE = 800, 500, 3, 14


def chart(fig, key: str, **kw):
    """Every figure of the app: Plotly's camera button (its own client-side export, nothing on the server)
    downloads it in the sidebar's format — PNG at 300 dpi or SVG, 800×500 with 14 px type — named by lab
    and figure. Tables download as CSV from their own toolbar (st.dataframe)."""
    fmt = st.session_state.get("figure_format", "png")
    if fig.layout.font.size is None:
        fig.update_layout(font_size=FONT_SIZE)
    config = {
        "displaylogo": False,
        "toImageButtonOptions": {
            "format": fmt,
            "filename": re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{engine().lab.name}-{key}"),
            "width": EXPORT_WIDTH,
            "height": EXPORT_HEIGHT,
            "scale": EXPORT_SCALE if fmt == "png" else 1,
        },
    }
    return st.plotly_chart(fig, key=key, config=config, **{"width": "stretch", **kw})


def figure_format_picker() -> None:
    st.sidebar.radio(
        "Figures download as",
        FIGURE_FORMATS,
        format_func=str.upper,
        key="figure_format",
        horizontal=True,
        help="the camera button on each figure: 800×500, PNG at 300 dpi or SVG. Tables: the download button on "
        "their toolbar (CSV).",
    )


def backend_name() -> str:
    """Where this session's evaluations run: its choice on the Lab page, else $MIXLAB_BACKEND, else local."""
    offered = dashboard_backends()
    name = st.session_state.get(BACKEND) or os.environ.get("MIXLAB_BACKEND", "local")
    return name if name in offered else "local"


def backend_picker() -> None:
    """The session's backend (kept under its own key: a widget's state is dropped on pages that lack it)."""
    offered, current = dashboard_backends(), backend_name()
    key = f"backend_pick:{current}"
    st.radio(
        "Evaluations run on",
        offered,
        index=offered.index(current),
        key=key,
        on_change=_picked,
        args=(BACKEND, key),
        horizontal=True,
        help="local: this process, one job at a time. ray: a pool of Ray workers (one per GPU, else per CPU) — the "
        "cluster at $MIXLAB_RAY_ADDRESS as the app was started, else one on this machine"
        + ("" if "ray" in offered else ". Ray is not installed here: pip install -r requirements-ray.txt"),
    )


def submit_evaluation(eng: Engine, m: Mixture, method: str, params: dict, benchmarks: list[str] | None = None) -> Job:
    """Score ``m`` as one recorded job: the request the page made, run by this session's executor."""
    request = ProxyRequest((m,), Method.for_lab(eng.lab, method, params), tuple(benchmarks or ()) or None)
    job = ProxyJob(request, backend_name())
    return submit_job(job.describe(), job.body(eng), job.kind, job.to_spec())


def current_job() -> Job | None:
    jid = st.session_state.get("last_job")
    return next((j for j in worker().jobs if j.id == jid), None)


def job_panel() -> None:
    """Progress and a cancel button for this session's last job; reruns the page when it ends. The panel
    polls twice a second only while the job runs (an idle page does not rerun)."""
    job = current_job()
    if job is None:
        return
    st.fragment(_job_panel, run_every=0.5 if job.active else None)()


def _job_panel() -> None:
    job = current_job()
    if job is None:
        return
    if job.active:
        eta = f" · about {job.eta:.0f} s left" if job.eta is not None else ""
        text = f"{job.state}: {escape(job.description)} — {escape(job.message) if job.message else 'queued…'}{eta}"
        st.progress(job.fraction, text=text)
        if st.button("Cancel", key=f"cancel_{job.id}"):
            job.cancel()
        st.session_state.job_was_active = job.id
    else:
        if job.state == "done":
            summary = job.scores_summary()
            st.success(f"Done: {escape(job.description)}" + (f" — {summary}." if summary else "."))
        elif job.state == "cancelled":
            st.warning(f"Cancelled: {escape(job.description)}")
        else:
            st.error(f"Failed: {escape(job.description)}: {escape(job.error)}")
        if st.session_state.get("job_was_active") == job.id:
            st.session_state.job_was_active = None
            st.rerun()  # redraw the whole page with the new point
