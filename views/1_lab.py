"""Lab: pick a lab and see what it holds."""

import pandas as pd
import streamlit as st

from mixlab.demo import DEMO_LAB
from views._shared import code, engine, escape, lab_path

st.title("Lab")
with st.form("lab_picker"):
    path = st.text_input(
        "Lab folder or lab.toml",
        value=lab_path(),
        key="lab_input",
        help=f"The demo lab is {DEMO_LAB}. Any folder with a lab.toml works.",
    )
    if st.form_submit_button("Open"):
        st.session_state.lab_path = path.strip()
        st.query_params["lab"] = path.strip()  # remembered across reloads
        st.rerun()

eng = engine()
lab = eng.lab
st.subheader(lab.name)
if lab.manifest.description:
    st.caption(escape(lab.manifest.description))
for warning in eng.warnings():
    if warning not in eng.store.notices:  # the store's notices are shown on every page already
        st.warning(escape(warning))

counts = {k: len(eng.cached(k)) for k in ("base", "expert", "true", "proxy")}
cols = st.columns(5)
cols[0].metric("Experts", len(eng.experts))
cols[1].metric("Benchmarks", len(lab.benchmarks))
cols[2].metric("True mixtures", len(lab.manifest.true_mixtures))
cols[3].metric("Cached proxy scores", counts["proxy"])
cols[4].metric("Cached other scores", counts["base"] + counts["expert"] + counts["true"])

st.markdown(
    f"**Base** {code(lab.manifest.base)} — {eng.base.n_params:,} parameters in {len(eng.base.keys())} tensors, "
    f"fingerprint `{eng.base.fingerprint[:12]}`"
)


def table(title: str, rows: list[dict], **kw) -> None:
    st.markdown(title)
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", **kw)


table(
    "**Experts**",
    [
        {
            "expert": e.name,
            "kind": e.kind,
            "rank": e.rank,
            "trainable params": e.n_params,
            "tensors changed": len(e.keys()),
            "fingerprint": e.fingerprint[:12],
        }
        for e in eng.experts
    ],
)
table(
    "**Benchmarks**",
    [
        {
            "benchmark": b.name,
            "evaluator": b.evaluator,
            "data": b.data,
            "direction": "↑ higher is better" if b.higher_is_better else "↓ lower is better",
        }
        for b in lab.benchmarks
    ],
)
table(
    "**True mixtures** (models trained on the mixture itself)",
    [
        {
            "true mixture": lab.true_mixture_name(t),
            **lab.true_mixture_weights(t).as_dict(),
            "source": t.path or "scores in lab.toml",
        }
        for t in lab.manifest.true_mixtures
    ],
    height=260,
)
st.caption(f"Evaluation cache: {code(eng.store.path)} — {counts}")
