"""Merge & evaluate on demand: any method and parameters, evaluated in the background; export."""

import streamlit as st

from mixlab.analysis import MEAN, cached_params, interval_caption
from mixlab.context import (
    DIFFERENCE_CAPTION,
    NO_INTERVAL,
    context_text,
    difference_text,
    differences,
    mixture_in_context,
)
from mixlab.errors import MixlabError
from mixlab.lab import weights_label
from mixlab.scoring.request import Method
from mixlab.tables import labelled_scores, mixture_rows
from views.jobs import current_job, job_panel, submit_evaluation
from views.state import engine, mixture, results, view
from views.text import code, escape, show_error
from views.widgets import method_params_inputs, weight_inputs

st.title("Merge & evaluate")
eng = engine()
left, right = st.columns([1, 2])
with left:
    st.markdown("**Mixture**")
    weight_inputs(eng)
    cached = results(eng)  # a method's parameters start where the lab's cached proxies are, so a run compares
    started = lambda name: view(eng, ("cached params", name), lambda: cached_params(cached, name))  # noqa: E731
    method, params = method_params_inputs("merge", started)
    if started(method) is not None:
        st.caption(f"Parameters start at those of the lab's cached {method} proxies, so a first run compares.")
    bench_names = [b.name for b in eng.lab.benchmarks]
    chosen = st.multiselect("Benchmarks", bench_names, default=bench_names, key="merge_benchmarks")
with right:
    m = mixture(eng)
    device = eng.device_name() or "cuda, else mps, else cpu (picked at the first evaluation)"  # no torch import
    st.markdown(
        f"**θ = merge_{method}(θ₀, τ; w)** with w = "
        + ", ".join(f"{n}={w:.3f}" for n, w in zip(eng.names, m.weights))
        + (" · " + ", ".join(f"{k}={v}" for k, v in sorted(params.items())) if params else "")
        + f" · device `{device}`"
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

    spec_params = Method.for_lab(eng.lab, method, params).params  # (the spec's exclusions need the base loaded)
    table = mixture_rows(view(eng, "results", eng.results), eng.names, m.as_dict(), method, spec_params)
    if len(table):  # shown below, in context; here only its download
        st.download_button(
            "Scores as CSV",
            labelled_scores(table, m.as_dict(), method, spec_params).to_csv(index=False),
            file_name=f"mixlab_{method}_scores.csv",
            mime="text/csv",
            key="merge_csv",
        )
    else:
        st.info(f"This mixture has no cached {method} proxy scores with these parameters yet: press **Evaluate**.")

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
        key=f"merge_export_name:{method}_{label}",  # a new default when the method or mixture changes
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

# full width: one column per benchmark, each score with its interval (a table in the right column was clipped);
# on a narrow screen it scrolls sideways with the model's name kept in view
PINNED = {"model": st.column_config.TextColumn(width=165, pinned=True)}  # px: "nearest trained mixture"
shown = ([MEAN] if MEAN in set(cached.benchmark) else []) + list(chosen)
context = mixture_in_context(
    cached, eng.names, m.weights, method, spec_params, shown, Method.for_lab(eng.lab, "linear").params
)
parts = (["linear"] if method != "linear" else []) + ["the base", "the experts"]
parts += ["the trained mixture nearest to it"] if eng.lab.manifest.true_mixtures else []
beside = ", ".join(parts[:-1]) + " and " + parts[-1]
st.markdown(f"**At {escape(m.label())}**: the {escape(method)} proxy beside {beside}")
if len(context):
    st.dataframe(context_text(context, shown), hide_index=True, width="stretch", column_config=PINNED)
    trained = context[context.model.str.contains("trained mixture")]
    caption = interval_caption(context.ci) + "; n is the examples each was scored on"
    if context.low.isna().any():
        caption += f"; {NO_INTERVAL}"
    if len(trained):
        caption += f". The {escape(trained.model.iloc[0])}: {escape(trained.mixture.iloc[0])}"
    st.caption(caption + ".")
    first = f"{method} proxy"
    diffs = differences(context, first) if first in set(context.model) else context.iloc[0:0]
    if len(diffs):
        with st.expander(f"Differences: the {method} proxy minus each model, with 95% intervals"):
            st.dataframe(difference_text(diffs, shown), hide_index=True, width="stretch", column_config=PINNED)
            st.caption(DIFFERENCE_CAPTION)
else:
    st.info("Nothing is scored at this mixture or on these benchmarks yet.")
