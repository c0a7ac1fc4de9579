"""The widgets the pages share, each drawn from the view state (views.state) and writing back to it:
weight sliders (a table beyond 6 experts), the benchmark and proxy-method pickers, a merge method with its declared parameters, the
executor, the answer panel, figures (one chart() for every figure), stacking columns."""

from __future__ import annotations

import json
import re

import pandas as pd
import streamlit as st

from mixlab.analysis import MEAN
from mixlab.engine import Engine
from mixlab.merge import get_method, methods
from mixlab.plots import BEST_STYLE, weights_figure
from mixlab.run.executors import dashboard_backends
from mixlab.scoring import checkpoints
from mixlab.scoring.request import Method
from mixlab.simplex import rebalance
from mixlab.tables import params_label, proxy_methods
from views.state import BACKEND, BENCH, METHOD, MIXTURE, REV, backend_name, lab_name, results, set_mixture, view
from views.text import clip, code, escape


def point_data(point: dict) -> list[float] | None:
    """A selected point's customdata as a list (Plotly sends typed arrays as {"0": …, "1": …})."""
    cd = point.get("customdata")
    if isinstance(cd, dict):
        cd = [cd[k] for k in sorted(cd, key=int)]
    return None if cd is None else [float("nan") if v is None else float(v) for v in cd]


def _rebalance(i: int, key: str) -> None:
    """Weight i was edited: the others rescale so the mixture stays on the simplex (mixlab.simplex.rebalance)."""
    set_mixture(rebalance(st.session_state[MIXTURE], i, st.session_state[key]))


SLIDERS_UP_TO = 6  # more experts than this (a 15-checkpoint pool): one editable table, not a column of sliders


def _table_edited(key: str) -> None:
    """Rows of the weights table were edited: each edit as a slider's (the others rescale, Σw = 1), in order."""
    w = list(st.session_state[MIXTURE])
    for i, change in sorted(st.session_state[key].get("edited_rows", {}).items()):
        if change.get("weight") is not None:
            w = rebalance(w, int(i), float(change["weight"]))
    set_mixture(w)


def weight_inputs(eng: Engine) -> None:
    """One slider per expert, drawn from the selected mixture; editing one rescales the others (Σw = 1).
    Beyond :data:`SLIDERS_UP_TO` experts, one table of weights with a bar per weight, edited the same way."""
    rev = st.session_state.get(REV, 0)
    if len(eng.names) > SLIDERS_UP_TO:
        key = f"w_table_{rev}"
        table = pd.DataFrame({"expert": eng.names, "weight": [round(float(x), 4) for x in st.session_state[MIXTURE]]})
        st.data_editor(
            table,
            key=key,
            on_change=_table_edited,
            args=(key,),
            disabled=["expert"],
            hide_index=True,
            width="stretch",
            height=min(36 * (len(eng.names) + 1) + 3, 600),
            column_config={
                # names cut before weights: in a narrow column (the Merge page at 1024 px) the weight stays in view
                "expert": st.column_config.TextColumn("expert", width=130),
                "weight": st.column_config.NumberColumn(
                    "weight",
                    width=60,
                    min_value=0.0,
                    max_value=1.0,
                    step=0.0001,  # a coarser step rounds what is shown: 1/15 read 0.060 with step 0.01
                    format="%.3f",
                    help="Type a weight: the others rescale so the weights sum to 1.",
                ),
            },
        )
        chart(weights_figure(dict(zip(table.expert, table.weight))), key=f"weights_bars_{rev}")
        return
    for i, name in enumerate(eng.names):
        key = f"w_{i}_{rev}"
        value = round(float(st.session_state[MIXTURE][i]), 4)
        st.slider(name, 0.0, 1.0, value=value, step=0.01, key=key, on_change=_rebalance, args=(i, key), format="%.2f")


def _picked(state_key: str, widget_key: str, values: list | None = None) -> None:
    """A picker changed: its choice becomes the state (``values``: the widget holds an index into them)."""
    v = st.session_state[widget_key]
    st.session_state[state_key] = v if values is None else values[v]


def benchmark_options(df: pd.DataFrame, eng: Engine) -> list[str]:
    names = [b.name for b in eng.lab.benchmarks]
    return ([MEAN] if MEAN in set(df.benchmark) else []) + names


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


def proxy_method_picker(eng: Engine, container=st) -> tuple[str, dict]:
    """Pick among the (method, params) pairs that have cached proxy scores (mixlab.tables.proxy_methods: the
    lab's method first, linear when none): one choice shared by the pages and the URL."""
    default = Method.for_lab(eng.lab).pair()
    name = ("proxy methods", json.dumps(default, sort_keys=True))
    options = view(eng, name, lambda: proxy_methods(results(eng), default))
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


def backend_picker() -> None:
    """The session's executor (kept under its own key: a widget's state is dropped on pages that lack it)."""
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


def missing_scores_note(eng: Engine) -> None:
    """Say which checkpoints have no scores yet, and what fills them."""
    missing = view(eng, "unscored", lambda: checkpoints.unscored(eng))
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
            "filename": re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{lab_name()}-{key}"),
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
