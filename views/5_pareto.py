"""Pareto fronts: which mixtures trade benchmarks off best, and does merging beat single checkpoints?"""

import pandas as pd
import streamlit as st

from mixlab.analysis import MEAN, best_mixtures, best_on_plane, pareto_points, readable
from mixlab.plots import pareto_figure, pareto_figure_3d, vertex_key
from mixlab.tables import front_counts, fronts, method_table, of_method
from views.state import BENCH, MIXTURE, engine, results, set_mixture, winners
from views.text import code, escape
from views.widgets import benchmark_options, best_panel, chart, missing_scores_note, point_data, proxy_method_picker

st.title("Pareto fronts")
eng = engine()
df = results(eng)
missing_scores_note(eng)
if df.empty:
    st.info(
        f"No cached evaluations yet: run {code(f'python -m mixlab sweep {eng.lab.root} --checkpoints')} "
        f"and {code(f'python -m mixlab sweep {eng.lab.root}')}."
    )
    st.stop()
opts = benchmark_options(df, eng)
up = [b.name for b in eng.lab.benchmarks if b.higher_is_better] or opts
default_x, default_y = (up[0], up[1]) if len(up) > 1 else (opts[0], opts[-1])
c1, c2, c3, c4 = st.columns(4, vertical_alignment="bottom")
bx = c1.selectbox("x benchmark", opts, index=opts.index(default_x), key="pareto_x")
by = c2.selectbox("y benchmark", opts, index=opts.index(default_y), key="pareto_y")
NONE = "— (two objectives)"
bz = c3.selectbox(
    "z benchmark (optional)",
    [NONE, *opts],
    key="pareto_z",
    help="A third benchmark: the fronts are then non-dominated on all three, drawn in 3-D (drag to turn)",
)
bz = None if bz == NONE else bz
method, params = proxy_method_picker(eng, c4)
if len({bx, by, bz} - {None}) < (3 if bz else 2):
    st.warning("Choose two different benchmarks for x and y, and for z a third, different from both.")
    st.stop()
rows = of_method(df, method, params)
pts = pareto_points(rows, eng.names, bx, by, bz)


def on_select() -> None:
    """A clicked point's weights become the selected mixture (before the rerun the click triggers)."""
    state = st.session_state.get("pareto_plot")
    points = state["selection"]["points"] if state and state.get("selection") else []
    data = [d for d in map(point_data, points) if d]
    if data:
        set_mixture(data[0][: len(eng.names)])
        st.session_state.pareto_picked = True


front = st.session_state.get("searched_front")
searched = None
if front and sorted(map(tuple, front["objectives"])) == sorted([(bx,), (by,)]):  # a search on these two benchmarks
    searched = pd.DataFrame([{"x": b["test"][bx], "y": b["test"][by]} for b in front["best"]])
target = st.session_state.get(BENCH) or MEAN  # the benchmark the other pages show: its answer is marked here
target = target if target in opts else opts[0]
best = best_mixtures(rows, eng.names, target, winners())
if bz is None:
    chart(
        pareto_figure(
            pts,
            bx,
            by,
            eng.names,
            searched,
            best_on_plane(best, pts, eng.names, winners(), bx, by),
            st.session_state[MIXTURE],
        ),
        key="pareto_plot",
        on_select=on_select,
        selection_mode="points",
        width="stretch",
    )
    if vertex_key(eng.names):
        st.caption(f"Experts, numbered on the plot: {escape(vertex_key(eng.names))}.")
else:
    marked = best_on_plane(best, pts, eng.names, winners(), bx, by, bz)
    chart(pareto_figure_3d(pts, bx, by, bz, eng.names, marked, st.session_state[MIXTURE]), key="pareto_plot_3d")
    st.caption(
        "Three objectives: large opaque points are on a front (non-dominated on all three: no other model is at "
        "least as good on each and better on one); faint ones are dominated. Drag to turn; hover for the weights."
    )
if st.session_state.pop("pareto_picked", False):
    st.caption("Selected mixture set: open the **Simplex explorer** or **Merge & evaluate** to use it.")
best_panel(best, target, "pareto")
st.caption(
    f"Marked: the best mixtures on **{target}**, the benchmark the other pages show (pick it on the Simplex "
    "explorer); the red ring is the selected mixture."
)

counts = front_counts(pts)
st.markdown(
    f"**Checkpoint recycling.** The front of merges holds **{counts['merges']}** merged mixtures and "
    f"{counts['experts_on_front']} of {counts['experts']} single experts; a merge on the front "
    "is a trade-off no single checkpoint offers."
)
renamed = {"x": f"{bx} (x)", "y": f"{by} (y)", "z": f"{bz} (z)"}
shown = fronts(pts, eng.names)
trained = (pts.kind == "true").any()  # a recycling pool has checkpoints and their merges, no trained mixtures
for which, key, title in (
    ("merges", "pareto_proxy_front", "Front of merges (experts + proxies)"),
    (
        "trained",
        "pareto_true_front",
        "Front of trained models (experts + true mixtures)" if trained else "Front of the checkpoints alone",
    ),
):
    st.markdown(title)
    st.dataframe(shown[which].rename(columns=renamed), hide_index=True, width="stretch", key=key)

fair, n_shared = method_table(df, eng.names, bx, by)
st.markdown(
    f"**Merge methods side by side**, fairly: each method's merges at the **{n_shared}** mixtures every cached "
    f"method has, against the single experts on {escape(bx)} and {escape(by)} (a method with a denser grid cannot win by count)"
)
st.dataframe(readable(fair, 4, "—"), hide_index=True, width="stretch", key="pareto_methods")
