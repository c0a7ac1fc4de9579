"""Merge & evaluate on demand: any method and parameters, evaluated in the background; export."""

import pandas as pd
import streamlit as st

from mixlab.analysis import cached_params, weights_key
from mixlab.errors import MixlabError
from mixlab.lab import weights_label
from views._shared import (
    code,
    current_job,
    engine,
    job_panel,
    method_params_inputs,
    mixture,
    of_method,
    params_label,
    results,
    show_error,
    submit_evaluation,
    weight_inputs,
)

st.title("Merge & evaluate")
eng = engine()
left, right = st.columns([1, 2])
with left:
    st.markdown("**Mixture**")
    weight_inputs(eng)
    cached = results(eng)  # a method's parameters start where the lab's cached proxies are, so a run compares
    method, params = method_params_inputs("merge", lambda name: cached_params(cached, name))
    if cached_params(cached, method) is not None:
        st.caption(f"Parameters start at those of the lab's cached {method} proxies, so a first run compares.")
    bench_names = [b.name for b in eng.lab.benchmarks]
    chosen = st.multiselect("Benchmarks", bench_names, default=bench_names, key="merge_benchmarks")
with right:
    m = mixture(eng)
    st.markdown(
        f"**θ = merge_{method}(θ₀, τ; w)** with w = "
        + ", ".join(f"{n}={w:.3f}" for n, w in zip(eng.names, m.weights))
        + f" · params {params_label(params)} · device `{eng.device_name() or 'cuda, else mps, else cpu'}`"
    )
    job = current_job()
    busy = job is not None and job.active
    if st.button(
        "Evaluate",
        type="primary",
        disabled=busy or not chosen,
        key="merge_evaluate",
        help="Runs in the background; cached scores are reused",
    ):
        try:
            submit_evaluation(eng, m, method, params, chosen)
        except MixlabError as e:
            show_error("Cannot evaluate", e)
    job_panel()

    spec_params = eng.resolve_method(method, params)[1]  # (the spec's exclusions need the base loaded)
    df = eng.results()
    key = weights_key(m.as_dict(), eng.names)
    df = of_method(df, method, spec_params)
    mine = df[[k == "proxy" and weights_key(w, eng.names) == key for k, w in zip(df.kind, df.weights)]]
    if len(mine):
        table = mine[["benchmark", "metric", "score", "higher_is_better", "n", "seconds", "device"]].reset_index(
            drop=True
        )
        st.dataframe(table, hide_index=True, width="stretch")
        csv = pd.concat([table, pd.DataFrame([m.as_dict()] * len(table))], axis=1).assign(
            method=method, params=params_label(spec_params)
        )
        st.download_button(
            "Scores as CSV",
            csv.to_csv(index=False),
            file_name=f"mixlab_{method}_scores.csv",
            mime="text/csv",
            key="merge_csv",
        )
    else:
        st.info("This mixture has no cached scores for this method yet: press **Evaluate**.")

    st.markdown("**Export the merged model**")
    kind = st.radio(
        "Format",
        ["Hugging Face model folder", "PEFT adapter (linear merges of LoRA experts)"],
        key="merge_export_kind",
        horizontal=True,
    )
    label = weights_label(m.as_dict(), eng.names)
    name = st.text_input(
        "Export name",
        value=f"{method}_{label}",
        key="merge_export_name",
        help=f"Written to {eng.lab.exports}/<name> (a name, not a path)",
    )
    replace = st.checkbox(
        "Replace an earlier export of this name",
        value=False,
        key="merge_export_replace",
        help="Only a folder mixlab exported itself can be replaced",
    )
    if st.button("Export", key="merge_export"):
        try:
            out = eng.lab.export_path(name.strip())
            with st.spinner("Merging…"):
                path = eng.export(
                    m, out, method, params, adapter=kind.startswith("PEFT"), overwrite=replace, in_lab=True
                )
            st.success(f"Wrote {code(path)}")
        except MixlabError as e:
            show_error("Export failed", e)
