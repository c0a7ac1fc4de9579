"""Search: let mixlab find the mixture (optuna over the simplex), and recycle a pool of checkpoints."""

import pandas as pd
import streamlit as st

from mixlab.distributed import shared
from mixlab.errors import MixlabError
from mixlab.plots import trace_figure, weights_figure
from mixlab.search import SAMPLERS
from views._shared import (
    backend_name,
    chart,
    code,
    current_job,
    engine,
    escape,
    job_panel,
    no_benchmarks,
    set_mixture,
    show_error,
    submit_job,
)

st.title("Search")
eng = engine()
names = [b.name for b in eng.lab.benchmarks]
if not names:
    no_benchmarks()
dev = [b.name for b in eng.lab.benchmarks if b.search_data]
st.caption(
    "Optimises on each benchmark's search_data (dev) and reports the winners on its data (test); every "
    f"candidate is a cached proxy score. The same as {code(f'python -m mixlab search {eng.lab.root}')}."
)
if not dev:
    st.info(
        "No benchmark of this lab has search_data (a dev file), so a search here would optimise on the data it reports."
    )

c1, c2, c3, c4 = st.columns(4)
objectives = c1.multiselect(
    "Objective(s)",
    ["mean", *names],
    default=["mean"],
    key="search_objectives",
    help="1 objective, or 2-3 for a Pareto front",
)
sampler = c2.selectbox("Sampler", SAMPLERS, index=SAMPLERS.index("tpe"), key="search_sampler")
trials = int(c3.number_input("Trials", 1, 500, 20, key="search_trials"))
fidelity = c4.number_input("Fidelity (0: off)", 0.0, 0.9, 0.0, step=0.05, key="search_fidelity")
allow_test = st.checkbox("Search benchmarks without search_data (on the reported data)", key="search_allow_test")

job = current_job()
if st.button("Search", type="primary", disabled=(job is not None and job.active) or not objectives, key="search_run"):
    from mixlab.search import Search

    try:
        search = Search(
            eng,
            objectives,
            sampler=sampler,
            fidelity=fidelity or None,
            allow_test=allow_test,
            seed=0,
            backend=shared(backend_name()),
        )
        st.session_state.search_job = submit_job(
            f"search {', '.join(objectives)} ({sampler}, {trials} trials)",
            lambda progress, cancel: search.run(trials, progress=progress, cancel=cancel),
        ).id
    except MixlabError as e:
        show_error("Cannot search", e)
job_panel()

job = current_job()
if job is not None and job.state == "done" and job.id == st.session_state.get("search_job"):
    result = job.result
    # for the Simplex explorer (the points tried) and the Pareto page (a two-benchmark front)
    st.session_state.searched = [t["weights"] for t in result.trials if t["state"] == "complete"]
    st.session_state.searched_front = {"objectives": [o.names for o in result.objectives], "best": result.best}
    st.markdown(
        f"**Study {escape(result.study)}**: {len(result.trials)} trials, {result.full_evaluations:g} full dev "
        f"evaluations this run; searched on **{result.split}** data"
        + (" — the reported scores below are optimistic" if result.split == "test" else "")
    )
    rows = [
        {
            **b["weights"],
            **{f"dev {o.label()}": v for o, v in zip(result.objectives, b["dev"])},
            **{f"test {k}": v for k, v in b["test"].items()},
        }
        for b in result.best
    ]
    st.dataframe(pd.DataFrame(rows).round(4), hide_index=True, width="stretch", key="search_best")
    curve, bars = st.columns(2)
    done_trials = [t for t in result.trials if t["state"] == "complete" and t["values"]]
    if len(result.objectives) == 1 and done_trials:
        values = [t["values"][0] for t in done_trials]
        curve.markdown(f"**Best so far** ({escape(result.objectives[0].label())} on dev) vs trials")
        with curve:
            chart(trace_figure(values, f"{result.objectives[0].label()} (dev)"), key="search_trace")
    bars.markdown("**Best weights** per expert")
    with bars:
        chart(weights_figure(result.best[0]["weights"]), key="search_weights")
    pick = st.selectbox("Use a winner as the selected mixture", range(len(result.best)), key="search_pick")
    if st.button("Select this mixture", key="search_select"):
        set_mixture([result.best[pick]["weights"][n] for n in eng.names])
        st.success("Selected: the Simplex explorer, Merge & evaluate and the Pareto page now show it.")

st.divider()
st.subheader("Checkpoint recycling")
st.caption(
    "The lab's experts as a pool of checkpoints: the best single checkpoint, the uniform average, a greedy "
    f"soup and a searched merge (CMA-ES), chosen on dev and reported on test ({code(f'python -m mixlab recycle {eng.lab.root}')})."
)
r1, r2 = st.columns(2)
objective = r1.selectbox("Objective", ["mean", *names], key="recycle_objective")
rtrials = int(r2.number_input("Search trials", 1, 500, 40, key="recycle_trials"))
if st.button("Compare", key="recycle_run", disabled=(job is not None and job.active)):
    from mixlab.recycle import recycle

    st.session_state.recycle_job = submit_job(
        f"recycling {len(eng.names)} checkpoints ({objective})",
        lambda progress, cancel: recycle(eng, objective, trials=rtrials, progress=progress),
    ).id
job = current_job()
if job is not None and job.state == "done" and job.id == st.session_state.get("recycle_job"):
    rows = job.result
    table = pd.DataFrame(
        [
            {
                "candidate": r["candidate"],
                "dev objective": r["dev_objective"],
                "test objective": r["test_objective"],
                **r["test"],
            }
            for r in rows
        ]
    )
    st.dataframe(table.round(4), hide_index=True, width="stretch", key="recycle_table")
    single, searched = rows[0]["test_objective"], rows[-1]["test_objective"]
    st.markdown(
        f"On test the searched merge **{'beats' if searched > single else 'does not beat'}** the best single "
        f"checkpoint ({searched:.4f} vs {single:.4f})."
    )
    chart(weights_figure(rows[-1]["weights"], "weight in the searched merge"), key="recycle_weights")
