"""Simplex explorer: proxy scores over the mixture simplex; click a point to select a mixture."""

import numpy as np
import streamlit as st

from mixlab.analysis import scores_at, weights_key
from mixlab.plots import metric_title, simplex_figure
from views._shared import (
    MIXTURE,
    benchmark_options,
    engine,
    job_panel,
    mixture,
    of_method,
    point_data,
    proxy_method_picker,
    results,
    set_mixture,
    submit_evaluation,
    weight_inputs,
)

st.title("Simplex explorer")
eng = engine()
names = eng.names
k = len(names)
df = results(eng)
if df.empty:
    st.info("No cached evaluations yet: run `python -m mixlab sweep` or use **Merge & evaluate**.")

c1, c2 = st.columns(2)
bench = c1.selectbox(
    "Benchmark", benchmark_options(df, eng), key="simplex_bench", help="'mean' averages the higher-is-better benchmarks"
)
method, params = proxy_method_picker(df, "simplex_method", c2)
df = of_method(df, method, params)

sub = df[df.benchmark == bench]
proxy = sub[sub.kind == "proxy"]
true = sub[sub.kind == "true"]
experts = sub[sub.kind == "expert"]
hib = bool(sub.higher_is_better.iloc[0]) if len(sub) else True
metric = sub.metric.iloc[0] if len(sub) else ""


def on_select() -> None:
    """Runs before the rerun a click triggers, so the page renders once, with the new mixture."""
    k_, hib_ = st.session_state.simplex_ctx
    state = st.session_state.get("simplex_plot")
    points = state["selection"]["points"] if state and state.get("selection") else []
    data = [d for d in map(point_data, points) if d is not None and len(d) > k_ and not np.isnan(d[k_])]  # w…, score
    if not data:
        return
    if len(data) == 1:
        st.session_state.region = None
        set_mixture(data[0][:k_])
    else:  # a box or lasso: select the region's best mixture
        scores = [d[k_] for d in data]
        best = int(np.argmax(scores) if hib_ else np.argmin(scores))
        st.session_state.region = {"n": len(data), "best": data[best][:k_], "score": scores[best]}
        set_mixture(data[best][:k_])


st.session_state.simplex_ctx = (k, hib)
left, right = st.columns([1, 1])
with left:
    fig = simplex_figure(names, proxy, true, experts, st.session_state[MIXTURE], metric_title(bench, metric, hib), hib)
    st.plotly_chart(
        fig, key="simplex_plot", on_select=on_select, selection_mode=("points", "box", "lasso"), width="stretch"
    )
    if k > 3:
        st.caption(
            f"K={k}: each mixture is drawn at the weighted average of the polygon's vertices (one per expert). "
            "Every cached mixture is visible and clickable here, which a ternary slice would not allow for "
            "Dirichlet-sampled points; hover for the exact weights."
        )

with right:
    m = mixture(eng)
    st.markdown("**Selected mixture**")
    st.markdown(" · ".join(f"`{n}` **{w:.3f}**" for n, w in zip(names, m.weights)))
    region = st.session_state.get("region")
    if region and weights_key(dict(zip(names, region["best"])), names) == weights_key(m.as_dict(), names):
        st.caption(f"Region of {region['n']} mixtures selected; its best ({bench}) is shown: {region['score']:.4f}")
    weight_inputs(eng)

    table, true_key, exact, dist = scores_at(df, names, m.weights, benchmark_options(df, eng))
    st.dataframe(table.round(4), hide_index=True, width="stretch", key="selected_scores")
    if true_key is not None and not exact:
        st.caption(
            f"No model was trained at exactly this mixture; 'nearest true' is "
            f"{', '.join(f'{n}={w:.3f}' for n, w in zip(names, true_key))} (L1 distance {dist:.3f})."
        )
    if table.empty or table["proxy"].isna().any():
        if st.button(f"Evaluate this mixture ({method})", type="primary", key="simplex_evaluate"):
            submit_evaluation(eng, m, method, params)
    job_panel()
