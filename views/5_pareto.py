"""Pareto fronts: which mixtures trade benchmarks off best, and does merging beat single checkpoints?"""

import json

import streamlit as st

from mixlab.analysis import pareto_points
from mixlab.plots import pareto_figure
from views._shared import benchmark_options, engine, params_label, point_data, results, set_mixture

st.title("Pareto fronts")
eng = engine()
df = results(eng)
if df.empty:
    st.info("No cached evaluations yet.")
    st.stop()
opts = benchmark_options(df, eng)
up = [b.name for b in eng.lab.benchmarks if b.evaluator != "lm_loss"] or opts
default_x, default_y = (up[0], up[1]) if len(up) > 1 else (opts[0], opts[-1])
proxy_all = df[df.kind == "proxy"]
methods = sorted({(m, json.dumps(p, sort_keys=True)) for m, p in zip(proxy_all.method, proxy_all.params)}) or [
    ("linear", "{}")
]
c1, c2, c3 = st.columns(3)
bx = c1.selectbox("x benchmark", opts, index=opts.index(default_x), key="pareto_x")
by = c2.selectbox("y benchmark", opts, index=opts.index(default_y), key="pareto_y")
mi = c3.selectbox(
    "Proxy merge method",
    range(len(methods)),
    key="pareto_method",
    format_func=lambda i: f"{methods[i][0]} {params_label(json.loads(methods[i][1]))}",
)
method, params = methods[mi][0], json.loads(methods[mi][1])
if bx == by:
    st.warning("Choose two different benchmarks.")
    st.stop()
rows = df[(df.kind != "proxy") | ((df.method == method) & df.params.map(lambda p: p == params))]
pts = pareto_points(rows, eng.names, bx, by)
event = st.plotly_chart(
    pareto_figure(pts, bx, by, eng.names),
    key="pareto_plot",
    on_select="rerun",
    selection_mode="points",
    width="stretch",
)
sel = [d for d in map(point_data, event.selection.points if event and event.selection else []) if d]
if sel and json.dumps(sel[0]) != st.session_state.get("pareto_last_selection"):
    st.session_state.pareto_last_selection = json.dumps(sel[0])
    set_mixture(sel[0][: len(eng.names)])
    st.caption("Selected mixture set: open the **Simplex explorer** or **Merge & evaluate** to use it.")

merged_front = pts[pts.proxy_front & (pts.kind == "proxy")]
experts = pts[pts.kind == "expert"]
st.markdown(
    f"**Checkpoint recycling.** The front of merges holds **{len(merged_front)}** merged mixtures and "
    f"{int((pts.proxy_front & (pts.kind == 'expert')).sum())} of {len(experts)} single experts; a merge on the front "
    "is a trade-off no single checkpoint offers."
)
cols = ["kind", "label", "x", "y", *eng.names]
st.markdown("Front of merges (experts + proxies)")
st.dataframe(
    pts[pts.proxy_front][cols].rename(columns={"x": f"{bx} (x)", "y": f"{by} (y)"}),
    hide_index=True,
    width="stretch",
    key="pareto_proxy_front",
)
st.markdown("Front of trained models (experts + true mixtures)")
st.dataframe(
    pts[pts.true_front][cols].rename(columns={"x": f"{bx} (x)", "y": f"{by} (y)"}),
    hide_index=True,
    width="stretch",
    key="pareto_true_front",
)
