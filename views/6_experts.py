"""Experts: interference diagnostics read off the task vectors."""

import streamlit as st

from mixlab.diagnostics import interference
from mixlab.plots import heatmap
from views._shared import chart, engine

st.title("Experts")
eng = engine()


@st.cache_data(show_spinner="Reading task vectors…")
def diagnostics(models_fp: str, lab_path: str):
    return interference(eng.experts)


d = diagnostics(eng.models_fp, str(eng.lab.root))
st.markdown("**Task-vector norms** ‖τ_i‖ per layer: how far each expert moved from the base.")
chart(heatmap(d["norms"], "‖τ‖₂", colorscale="Blues"), key="exp_norms")
left, right = st.columns(2)
with left:
    st.markdown("**Cosine similarity** of whole task vectors: near 0 means the experts moved in unrelated directions.")
    chart(heatmap(d["cosine"], "cosine", zmin=-1, zmax=1, colorscale="RdBu"), key="exp_cos")
with right:
    st.markdown(
        "**Sign conflicts** per layer: of the entries that ≥ 2 experts change, the fraction whose signs "
        "disagree — what TIES's sign election resolves."
    )
    conflicts = (
        d["conflicts"].set_index("layer")[["conflict_fraction"]].T.rename(index={"conflict_fraction": "conflicts"})
    )
    chart(heatmap(conflicts, "fraction", zmin=0, zmax=1, colorscale="Reds", fmt=".2f"), key="exp_conf")
    st.dataframe(d["conflicts"], hide_index=True)
