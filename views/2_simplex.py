"""Simplex explorer: proxy scores over the mixture simplex; click a point to select a mixture."""

import json

import numpy as np
import pandas as pd
import streamlit as st

from mixlab.analysis import best_mixtures, interval_caption, scores_at
from mixlab.context import NO_INTERVAL
from mixlab.errors import MixlabError
from mixlab.evaluate import open_image
from mixlab.plots import COLOURS, metric_title, parallel_figure, selection_pick, simplex_figure, vertex_key
from mixlab.scoring import images
from mixlab.scoring.request import Method
from mixlab.simplex import separating_vertices
from mixlab.tables import of_method
from views.jobs import job_panel, submit_evaluation, worker
from views.state import MIXTURE, engine, mixture, results, results_ready, set_mixture, view, winners
from views.text import code, escape, show_error
from views.widgets import (
    benchmark_options,
    benchmark_picker,
    best_panel,
    chart,
    missing_scores_note,
    point_data,
    proxy_method_picker,
    weight_inputs,
)

st.title("Simplex explorer")
eng = engine()
names = eng.names
k = len(names)
top = st.container()  # the notices and pickers: filled once the scores are read, drawn above the plot
# side by side on a wide screen; on a narrow one (a 1024 px laptop with the sidebar open) the plot takes
# the full width and the selection goes below it (our own fixed CSS, nothing from the user)
st.html(
    "<style>@media (max-width: 1280px) {"
    ".st-key-simplex_main [data-testid='stHorizontalBlock'] { flex-wrap: wrap; }"
    ".st-key-simplex_main [data-testid='stColumn'] { min-width: 100%; flex: 1 1 100%; }"
    "}</style>"
)
left, right = st.container(key="simplex_main").columns([3, 2])
plot = left.empty()
if not results_ready(eng) and not st.session_state.get("simplex_drawn"):
    # a first visit while this server reads the lab's scores (about a second, once per process): the frame and
    # the selected mixture first, so the browser starts loading Plotly meanwhile (and draws the frame if that is
    # done first); the plot then takes its place
    empty = pd.DataFrame(columns=[*names, "score"])
    with plot:
        chart(
            simplex_figure(names, empty, empty, empty, st.session_state[MIXTURE], "reading the scores…", True),
            key="simplex_frame",
        )
df = results(eng)
with top:
    if not (df.kind == "proxy").any():
        st.info(
            f"No proxy scores cached yet: run {code(f'python -m mixlab sweep {eng.lab.root}')} (a step-0.1 grid), "
            "or pick a mixture below and press **Evaluate**."
        )
    missing_scores_note(eng)

    c1, c2 = st.columns(2)
    bench = benchmark_picker(benchmark_options(df, eng), c1, help="'mean' averages the higher-is-better benchmarks")
    method, params = proxy_method_picker(eng, c2)
    shown = (method, json.dumps(params, sort_keys=True))
    df = view(eng, ("of method", *shown), lambda: of_method(df, method, params))

    sub = df[df.benchmark == bench]
    won = winners()
    best = view(
        eng, ("best", bench, *shown, json.dumps(won, default=str)), lambda: best_mixtures(df, names, bench, won)
    )
    proxy = sub[sub.kind == "proxy"]
    true = sub[sub.kind == "true"]
    experts = sub[sub.kind == "expert"]
    hib = bool(sub.higher_is_better.iloc[0]) if len(sub) else True
    metric = sub.metric.iloc[0] if len(sub) else ""
    KIND_NAMES = {"proxy": "a proxy (merged experts)", "true": "a trained true mixture", "expert": "an expert"}

    def on_select() -> None:
        """Runs before the rerun a click triggers, so the page renders once, with the new mixture."""
        k_, hib_, bench_ = st.session_state.simplex_ctx
        state = st.session_state.get("simplex_plot")
        points = state["selection"]["points"] if state and state.get("selection") else []
        pick = selection_pick([point_data(p) for p in points], k_, hib_)
        if pick is None:
            return
        st.session_state.region = {**pick, "bench": bench_} if pick["n"] > 1 else None  # a box or lasso: say what won
        set_mixture(pick["weights"])

    st.session_state.simplex_ctx = (k, hib, bench)
    colour = st.radio(
        "Colour",
        COLOURS,
        format_func={
            "shared": "one scale (scores)",
            "per source": "normalised per source",
            "rank": "rank per source",
        }.get,
        horizontal=True,
        key="simplex_colour",
        help="A linear merge's scores are compressed against the trained models', so on one scale the proxies look "
        "worse; normalised or ranked within each source, the colours compare where each source puts its best.",
    )
    view = "ternary"
    if k > 3:
        view = st.radio(
            "View",
            ["separated", "polygon", "parallel"],
            format_func={
                "separated": "Separated projection (every mixture at its own point)",
                "polygon": f"Regular {k}-gon (overview)",
                "parallel": "Parallel coordinates (every mixture a line)",
            }.get,
            horizontal=True,
            key="simplex_view",
        )

with left:
    title = metric_title(bench, metric, hib)
    if view == "parallel":
        points = sub[sub.kind.isin(["proxy", "true"])]
        with plot:
            chart(parallel_figure(names, points, title, hib), key="simplex_parallel")
        st.caption(
            "One line per cached proxy and true mixture, through its weights and its score; drag along an "
            "axis to filter. Select a mixture in the other views or with the sliders."
        )
    else:
        verts = None
        if view == "separated":
            everything = sub[sub.kind.isin(["proxy", "true"])][list(names)].to_numpy(dtype=float)
            verts = separating_vertices(everything)
        tried = st.session_state.get("searched") or []
        searched = pd.DataFrame([[t.get(n, 0.0) for n in names] for t in tried], columns=list(names))
        fig = simplex_figure(
            names,
            proxy,
            true,
            experts,
            st.session_state[MIXTURE],
            title,
            hib,
            vertices=verts,
            searched=searched,
            best=list(best.values()),
            colour=colour,
        )
        with plot:
            chart(fig, key="simplex_plot", on_select=on_select, selection_mode=("points", "box", "lasso"))
        if vertex_key(names):
            st.caption(f"Vertices: {escape(vertex_key(names))}.")
        if view == "separated":
            st.caption(
                f"K={k}: each mixture sits at the weighted average of the {k} vertices (one per expert), placed "
                "so that no two cached mixtures share a point; hover for the exact weights."
            )
        elif view == "polygon":
            st.caption(
                f"K={k}: the regular {k}-gon, an overview: symmetric mixtures (e.g. half of the first and third "
                "experts, and half of the second and fourth) land on one point here. Use the separated "
                "projection to click any mixture."
            )

    best_panel(best, bench, "simplex", marked=view != "parallel")
    st.session_state.simplex_drawn = True

with right:
    m = mixture(eng)
    st.markdown("**Selected mixture**")
    st.markdown(" · ".join(f"{code(n)} **{w:.3f}**" for n, w in zip(names, m.weights)))
    region = st.session_state.get("region")
    if region and np.allclose(region["weights"], m.weights, atol=1e-6):
        st.caption(
            f"Box/lasso: {region['n']} points selected; the best on {region['bench']} ({region['score']:.4f}) is "
            f"{KIND_NAMES.get(region['kind'], region['kind'])}, now selected."
        )
    weight_inputs(eng)

    table, true_key, exact, dist = scores_at(df, names, m.weights, benchmark_options(df, eng), text=True)
    if table.empty or (table["proxy"] == "—").any():
        if st.button(f"Evaluate this mixture ({method})", type="primary", key="simplex_evaluate"):
            submit_evaluation(eng, m, method, params)
    job_panel()

# the selected mixture's scores, full width (in the sliders' column the expert and true columns were clipped)
# as text with their 95% interval (a missing one reads "—": st.dataframe prints NaN as "None")
st.markdown(f"**Scores at the selected mixture** ({escape(m.label())})")
table["n"] = ["—" if pd.isna(v) else str(int(v)) for v in table["n"]]
st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    key="selected_scores",
    column_config={"benchmark": st.column_config.TextColumn(pinned=True)},
)
shown_ci = df[df.benchmark.isin(set(table.benchmark))].ci if "ci" in df else []
st.caption(
    f"{interval_caption(shown_ci)} (n: the examples; for the mean, summed over its benchmarks). A score "
    f"without one: {NO_INTERVAL}. Two scores whose intervals overlap may not differ."
)
if true_key is not None and not exact:
    st.caption(
        f"No model was trained at exactly this mixture; 'nearest true' is "
        f"{', '.join(f'{n}={w:.3f}' for n, w in zip(names, true_key))} (L1 distance {dist:.3f})."
    )


@st.cache_data(show_spinner=False, max_entries=1)
def _image_benchmarks(root: str, models_fp: str) -> list[str]:
    return images.benchmarks(engine())


shown_images = _image_benchmarks(str(eng.lab.root), eng.models_fp)
if shown_images:
    st.subheader("Examples")
    which = bench if bench in shown_images else shown_images[0]
    m = mixture(eng)
    answers_key = ("strip", which, tuple(round(w, 6) for w in m.weights), method, str(sorted(params.items())))

    def answer() -> None:  # before the rerun, so the page draws the answers (and no button) at once
        try:
            got_ = images.answers(eng, m, which, 6, Method.for_lab(eng.lab, method, params))
        except MixlabError as e:
            st.session_state.strip_error = str(e)
        else:
            st.session_state.setdefault("strip_answers", {})[answers_key] = got_

    got = st.session_state.get("strip_answers", {}).get(answers_key)
    st.caption(
        f"The first images of **{which}** ({'the selected benchmark' if which == bench else 'pick an image benchmark above to change'}), "
        "the question, the expected answer"
        + (
            ", and what the selected mixture's merge answers."
            if got
            else ". Press the button for the selected mixture's answers."
        )
    )
    if got is None:
        busy = any(j.active for j in worker().jobs)  # the model is one: answering would wait for the job
        st.button(
            "Answer with the selected mixture",
            key="strip_answer",
            on_click=answer,
            disabled=busy,
            help="the model is busy with a job; answer when it is done" if busy else None,
        )
    if "strip_error" in st.session_state:
        show_error("Cannot answer", MixlabError(st.session_state.pop("strip_error")))
    rows = got or [{**r, "output": None} for r in images.examples(eng, which, 6)]
    unreadable = []
    for col, r in zip(st.columns(len(rows)), rows):
        try:
            col.image(open_image(r["image"]), width=96)
        except MixlabError as e:
            unreadable.append(e)
            col.caption("(no image)")
        col.markdown(f"{code(r['prompt'])} → **{escape(r['answer'])}**")
        if r["output"] is not None:
            mark = "✓" if r["output"].strip() == r["answer"].strip() else "✗"
            col.markdown(f"merge: {code(r['output'] or '∅')} {mark}")
    if unreadable:
        more = f" ({len(unreadable) - 1} more like it)" if len(unreadable) > 1 else ""
        st.warning(f"{escape(unreadable[0])}{more}")
