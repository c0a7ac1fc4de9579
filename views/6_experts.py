"""Experts: interference diagnostics read off the task vectors, each beside its chance level."""

import streamlit as st

from mixlab.plots import heatmap
from mixlab.summary import expert_diagnostics
from views.state import engine
from views.widgets import chart, stacking_columns

st.title("Experts")
eng = engine()


@st.cache_data(show_spinner="Reading task vectors…")
def diagnostics(models_fp: str, lab_path: str):
    return expert_diagnostics(eng)  # kept beside the lab's cache: drawn again without reading the experts


d = diagnostics(eng.models_fp, str(eng.lab.root))
k = len(eng.names)
st.markdown("**Task-vector norms** ‖τ_i‖ per layer: how far each expert moved from the base.")
chart(heatmap(d["norms"], "‖τ‖₂", colorscale="Blues"), key="exp_norms")
left, right = stacking_columns("exp_pair", [1, 1])
with left:
    st.markdown("**Cosine similarity** of whole task vectors")
    chart(heatmap(d["cosine"], "cosine", zmin=-1, zmax=1, colorscale="RdBu"), key="exp_cos")
    st.caption(
        f"Chance: two unrelated directions in these {d['dims']:,} dimensions have |cosine| below "
        f"{d['cosine_chance']:.4f} (1.96/√d) 95% of the time; a value well above it is shared direction. "
        "For scale, a measured reference: in demo-k3, two LoRA runs trained on the same task (the rev expert "
        "and the true rev100 run) have cosine 0.094 — so about 0.1 already means 'alike', not 'unrelated'."
    )
with right:
    st.markdown(
        "**Sign conflicts** per layer: of the entries that ≥ 2 experts change, the fraction whose signs "
        "disagree (what TIES's sign election resolves), against chance"
    )
    c = d["conflicts"].set_index("layer")
    excess = (c[["conflict_fraction"]] - c[["chance_fraction"]].to_numpy()).T.rename(
        index={"conflict_fraction": "conflicts"}
    )
    text = excess.copy().astype(object)
    text.iloc[0] = [f"{o:.3f}<br>chance {ch:.3f}" for o, ch in zip(c.conflict_fraction, c.chance_fraction)]
    chart(heatmap(excess, "observed − chance", zmin=-0.25, zmax=0.25, colorscale="RdBu_r", text=text), key="exp_conf")
    st.caption(
        f"Chance: if each expert's sign were a fair coin, an entry that m experts change would conflict with "
        f"probability 1 − 2·0.5^m — {1 - 2 * 0.5**k:.3f} when all {k} do; the chance column averages it over "
        "the entries each layer has. White is chance; red, more conflict than chance; blue, experts that "
        "agree in sign more than chance."
    )
    st.dataframe(
        d["conflicts"].rename(columns={"conflict_fraction": "conflicts", "chance_fraction": "chance"}),
        hide_index=True,
        key="exp_conflicts",
    )
