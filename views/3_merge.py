"""Merge & evaluate on demand: any method and parameters, evaluated in the background; export."""

import streamlit as st

from mixlab.analysis import cached_params
from mixlab.errors import MixlabError
from mixlab.lab import weights_label
from mixlab.tables import labelled_scores, mixture_rows, params_label
from views.jobs import current_job, job_panel, submit_evaluation
from views.state import engine, mixture, results
from views.text import code, show_error
from views.widgets import method_params_inputs, weight_inputs

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
        + f" · params {params_label(params)} · device `{eng.device}`"
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

    spec_params = eng.spec(m, method, params).params
    table = mixture_rows(eng.results(), eng.names, m.as_dict(), method, spec_params)
    if len(table):
        st.dataframe(table, hide_index=True, width="stretch")
        st.download_button(
            "Scores as CSV",
            labelled_scores(table, m.as_dict(), method, spec_params).to_csv(index=False),
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
