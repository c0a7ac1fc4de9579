"""Search: let mixlab find the mixture (optuna over the simplex), read its studies, and recycle a pool of
checkpoints."""

import pandas as pd
import streamlit as st

from mixlab.errors import MixlabError
from mixlab.plots import (
    contour_figure,
    line_figure,
    slice_figure,
    studies_figure,
    trace_figure,
    trials_ternary,
    weights_figure,
)
from mixlab.recycle import compare_objective, interval_text, recorded_table, replay_command, verdict_text, verdicts
from mixlab.run.requests import RecycleJob, SearchJob
from mixlab.search import (
    SAMPLERS,
    Objective,
    Search,
    hypervolume_history,
    reference_point,
    set_note,
    standard_error,
    studies,
    study_file,
    study_note,
    study_trials,
    weight_importance,
    weights_study,
)
from views.jobs import current_job, job_panel, submit
from views.state import backend_name, engine, set_mixture
from views.text import code, escape, show_error
from views.widgets import chart, no_benchmarks

ss = st.session_state
st.title("Search")
eng = engine()
names = [b.name for b in eng.lab.benchmarks]
if not names:
    no_benchmarks()
dev = [b.name for b in eng.lab.benchmarks if b.search_data]
path = study_file(eng)
st.caption(
    "Optimises on each benchmark's search_data (dev) and reports the winners on its data (test); every "
    f"candidate is a cached proxy score. The same as {code(f'python -m mixlab search {eng.lab.root}')}."
)
if not dev:
    st.info(
        "No benchmark of this lab has search_data (a dev file), so a search here would optimise on the data it reports."
    )


def mixture_text(weights: dict) -> str:
    return " · ".join(f"{n} {w:.3f}" for n, w in weights.items() if w >= 0.0005)


def with_interval(row: dict, objective: Objective, value: float) -> str:
    se = standard_error(row, objective)
    return f"{value:.4f}" + (f" ± {2 * se:.4f}" if se is not None else "")


c1, c2, c3, c4 = st.columns(4)
objectives = c1.multiselect(
    "Objective(s)",
    ["mean", *names],
    default=["mean"],
    key="search_objectives",
    help="1 objective, or 2-3 for a Pareto front. mean: the mean of the higher-is-better benchmarks",
)
sampler = c2.selectbox("Sampler", SAMPLERS, index=SAMPLERS.index("tpe"), key="search_sampler")
trials = int(c3.number_input("Trials", 1, 500, 20, key="search_trials"))
fidelity = c4.number_input("Fidelity (0: off)", 0.0, 0.9, 0.0, step=0.05, key="search_fidelity")
allow_test = st.checkbox("Search benchmarks without search_data (on the reported data)", key="search_allow_test")

job = current_job()
busy = job is not None and job.active
if st.button("Search", type="primary", disabled=busy or not objectives, key="search_run"):
    try:
        search = Search(eng, objectives, sampler=sampler, fidelity=fidelity or None, allow_test=allow_test, seed=0)
        done = search.finished_trials()
        request = SearchJob(
            objectives,
            sampler,
            target=done + trials,  # a resume runs only what is left of these
            seed=0,
            fidelity=fidelity or None,
            allow_test=allow_test,
            study=search.name,
            executor=backend_name(),
        )
        what = " and ".join(o.describe() for o in search.objectives)
        job = submit(request, f"search {what} ({sampler}, {trials} trials{f' after {done}' if done else ''})")
        ss.search_job, ss.search_study = job.id, search.name
    except MixlabError as e:
        show_error("Cannot search", e)
job = current_job()
if job is None or job.id != ss.get("recycle_job"):
    job_panel()


def live_history() -> None:
    """While this session's search runs: its study's trials so far, read from search.sqlite."""
    running = current_job()
    if running is None or not running.active or running.id != ss.get("search_job") or path is None:
        return
    try:
        done_ = [t for t in study_trials(path, ss.search_study, eng.names) if t["state"] == "complete"]
    except (KeyError, MixlabError):  # the study is being created: nothing to draw yet
        return
    if done_ and len(done_[0]["values"]) == 1:
        st.markdown(f"**Live**: {len(done_)} trials so far (objective on dev; best so far as a line)")
        chart(trace_figure([t["values"][0] for t in done_], "objective (dev)"), key="search_live")


job = current_job()
live = job is not None and job.active and job.id == ss.get("search_job")
st.fragment(live_history, run_every=1.0 if live else None)()

job = current_job()
if job is not None and job.state == "done" and job.id == ss.get("search_job"):
    result = job.result
    objective = result.objectives[0]
    # for the Simplex explorer (the points tried) and the Pareto page (a two-benchmark front)
    ss.searched = [t["weights"] for t in result.trials if t["state"] == "complete"]
    ss.searched_front = {"objectives": [o.names for o in result.objectives], "best": result.best}
    st.markdown(
        f"**Study {escape(result.study)}**: {len(result.trials)} trials, {result.full_evaluations:g} full dev "
        f"evaluations this run; objective{'s' if len(result.objectives) > 1 else ''} "
        + ", ".join(f"**{escape(o.describe())}**" for o in result.objectives)
        + f"; searched on **{result.split}** data"
        + (" — the reported scores below are optimistic" if result.split == "test" else "")
    )
    rows = [
        {
            "candidate": "searched" if len(result.best) == 1 else f"front point {i + 1}",
            **b["weights"],
            **{f"dev objective ({o.describe()})": v for o, v in zip(result.objectives, b["dev"])},
            **{
                f"test objective ({o.describe()})": with_interval(b, o, v)
                for o, v in zip(result.objectives, b["test_objective"])
            },
            **{f"test {k}": v for k, v in b["test"].items()},
        }
        for i, b in enumerate(result.best)
    ] + [
        {
            "candidate": r["candidate"],
            **r["weights"],
            **{
                f"test objective ({o.describe()})": with_interval(r, o, v)
                for o, v in zip(result.objectives, r["test_objective"])
            },
            **{f"test {k}": v for k, v in r["test"].items()},
        }
        for r in result.baselines
    ]
    st.markdown(
        "**The winner beside its baselines**, on test (± 2 binomial standard errors where the metric is an accuracy)"
    )
    st.dataframe(pd.DataFrame(rows).round(4), hide_index=True, width="stretch", key="search_best")
    if result.baselines:
        win = result.best[0]["test_objective"][0]
        st.caption(
            f"The winner's test {escape(objective.describe())}: **{win:.4f}**; "
            + "; ".join(f"{escape(r['candidate'])}: {r['test_objective'][0]:.4f}" for r in result.baselines)
            + "."
        )
    bars, picker = st.columns(2)
    bars.markdown("**Best weights** per expert")
    with bars:
        chart(weights_figure(result.best[0]["weights"]), key="search_weights")
    pick = picker.selectbox(
        "Use a winner as the selected mixture",
        range(len(result.best)),
        format_func=lambda i: mixture_text(result.best[i]["weights"]),
        key="search_pick",
    )
    if picker.button("Select this mixture", key="search_select"):
        set_mixture([result.best[pick]["weights"][n] for n in eng.names])
        picker.success("Selected: the Simplex explorer, Merge & evaluate and the Pareto page now show it.")

# --- the lab's stored studies ----------------------------------------------------------------------------
st.divider()
st.subheader("Studies")
try:
    listed = studies(path, eng)
except MixlabError as e:
    show_error("Cannot read the studies", e)
    listed = []
if not listed:
    st.caption(f"No study of this lab stored yet{'' if path is None else f' in {code(path)}'}.")
else:
    st.caption(f"Every search of this lab, kept in {code(path)} (optuna's storage): pick one to read it.")
    st.dataframe(pd.DataFrame(listed).round(4), hide_index=True, width="stretch", key="search_studies")
    study_names = [s["study"] for s in listed]
    chosen = ss.get("search_study") if ss.get("search_study") in study_names else study_names[-1]
    view = st.selectbox("Study", study_names, index=study_names.index(chosen), key=f"search_view:{chosen}")
    trials_ = study_trials(path, view, eng.names)
    done_trials = [t for t in trials_ if t["state"] == "complete" and t["values"]]
    n_obj = len(done_trials[0]["values"]) if done_trials else 1
    desc = next(s for s in listed if s["study"] == view)["objectives"]
    h1, h2 = st.columns(2)
    if done_trials and n_obj == 1:
        h1.markdown("**Optimisation history** (objective on dev; the line is the best so far)")
        with h1:
            chart(trace_figure([t["values"][0] for t in done_trials], "objective (dev)"), key="search_history")
    elif done_trials:
        import numpy as np

        values = np.array([t["values"] for t in done_trials])
        h1.markdown(f"**Hypervolume history** of the {n_obj}-objective front ({escape(desc)}; dev)")
        with h1:
            chart(line_figure(hypervolume_history(values, reference_point(values)), "hypervolume"), key="search_hv")
    importance = weight_importance(trials_, eng.names)
    h2.markdown("**Importance of each expert's weight** (optuna's fANOVA on the weights; first objective)")
    if importance:
        with h2:
            chart(weights_figure(importance, "importance (sums to 1)"), key="search_importance")
    else:
        h2.caption("Needs 3 complete trials.")
    if done_trials:
        st.markdown("**Slice**: the objective (dev) of every trial against each expert's weight")
        chart(slice_figure(weights_study(trials_, eng.names, n_obj), "objective (dev)"), key="search_slice")
        if len(eng.names) == 3:
            st.markdown("**The trials on the simplex**, coloured by the objective (dev); the best ringed")
            chart(trials_ternary(eng.names, trials_, "objective (dev)"), key="search_ternary")
        if len(done_trials) >= 3:
            ranked = list(importance) or list(eng.names)  # the two weights that matter most first
            k1, k2 = st.columns(2)
            cx = k1.selectbox("Contour x", eng.names, index=eng.names.index(ranked[0]), key=f"search_cx:{view}")
            others = [n for n in eng.names if n != cx]
            cy = k2.selectbox(
                "Contour y", others, index=others.index(next(n for n in ranked if n != cx)), key=f"search_cy:{view}"
            )
            st.markdown(
                f"**Contour**: the objective (dev) over the weights of {escape(cx)} and {escape(cy)} (optuna's "
                "contour plot, interpolated between the trials; the other weights vary underneath)"
            )
            chart(
                contour_figure(weights_study(trials_, eng.names, n_obj), cx, cy, "objective (dev)"),
                key="search_contour",
            )
    if len(listed) > 1:
        others = [n for n in study_names if n != view]
        against = st.multiselect(
            "Compare with",
            others,
            default=others[-1:],
            key=f"search_compare:{view}",
            help="Other studies of this lab: their best-so-far lines beside this one's",
        )
        histories = {}
        for name in [view, *against]:
            values = [
                t["values"][0] for t in study_trials(path, name, eng.names) if t["state"] == "complete" and t["values"]
            ]
            histories[name] = values
        table = [next(s for s in listed if s["study"] == n) for n in histories]
        st.markdown("**Studies compared**: best so far per trial (first objective, dev)")
        left, right = st.columns([3, 2])
        with left:
            chart(studies_figure(histories, "objective (dev)"), key="search_compare_plot")
        right.dataframe(
            pd.DataFrame(table)[["study", "sampler", "objectives", "trials", "best"]].round(4),
            hide_index=True,
            width="stretch",
            key="search_compare_table",
        )
    note_key = f"search_note:{view}"
    note = st.text_area("Note on this study (kept in the study)", value=study_note(path, view), key=note_key)
    if st.button("Save note", key="search_note_save"):
        try:
            set_note(path, view, note)
            st.toast("Note saved with the study.")
        except MixlabError as e:
            show_error("Cannot save the note", e)

# --- checkpoint recycling --------------------------------------------------------------------------------
st.divider()
st.subheader("Checkpoint recycling")
recorded = recorded_table(eng.lab)
said_before = recorded[-1]["search"] if recorded else {}  # Compare's defaults: the recorded search's settings
st.caption(
    "The lab's experts as a pool of checkpoints: the best single checkpoint, the uniform average, a greedy "
    f"soup and a searched merge (CMA-ES), chosen on dev and reported on test ({code(replay_command(eng.lab.root, said_before))}). "
    "Compared again with the same settings it replays the lab's recycle.json, or reads its study back: it never "
    "silently adds trials."
)
r1, r2, r3 = st.columns(3)
objective = r1.selectbox(
    "Objective",
    ["mean", *names],
    key="recycle_objective",
    format_func=lambda o: Objective.parse(o, eng.lab.benchmarks).describe() if o == "mean" else o,
)
rtrials = int(r2.number_input("Search trials", 1, 500, int(said_before.get("trials", 40)), key="recycle_trials"))
sparse = r3.checkbox(
    "Sparse merges, started at the soup",
    value=said_before.get("space") == "sparse" and bool(said_before.get("start")),
    key="recycle_sparse",
    help="The search may set weights to exactly 0 (so it can settle on a few checkpoints) and evaluates the "
    "greedy soup and the best single checkpoint first, CMA-ES starting at the soup",
)
r4, _ = st.columns([1, 2])
rgroups = int(
    r4.number_input(
        "Layer groups",
        1,
        16,
        1,
        key="recycle_groups",
        help="Search a weight per checkpoint in each of N layer groups (runs of consecutive blocks; the input and "
        "output sides belong to the first and last) — LoRA-Soups / mergekit-evolve style. 1: one weight per "
        "checkpoint. A merge per group is another model: scored and cached apart from the plain merges.",
    )
)
job = current_job()
if st.button("Compare", key="recycle_run", disabled=job is not None and job.active):
    request = RecycleJob(
        objective,
        "cmaes",
        rtrials,
        0,
        space="sparse" if sparse else "simplex",
        start=sparse,
        layer_groups=rgroups,
    )
    said = f"{', sparse from the soup' * sparse}{f', {rgroups} layer groups' * (rgroups > 1)}"
    ss.recycle_job = submit(
        request,
        f"recycling {len(eng.names)} checkpoints ({objective}, {rtrials} trials{said})",
    ).id
job = current_job()
if job is not None and job.id == ss.get("recycle_job"):
    job_panel()


def recycle_result(rows: list[dict], said: str) -> None:
    obj = compare_objective(eng, rows)
    st.markdown(said)
    table = pd.DataFrame(
        [
            {
                "candidate": r["candidate"],
                "checkpoints": len(r["weights"]),
                "dev objective": round(r["dev_objective"], 4),
                "test objective": with_interval(r, obj, r["test_objective"]),
                "vs best single (paired 95% CI)": interval_text(r.get("vs_best_single")),
                **r["test"],
            }
            for r in rows
        ]
    )
    st.dataframe(table.round(4), hide_index=True, width="stretch", key="recycle_table")
    lines = [f"- {verdict_text(v, strong=lambda s: f'**{s}**', name=escape)}" for v in verdicts(rows)]
    st.markdown(
        "On test, the searched merge is:\n" + "\n".join(lines) + "\n\n"
        "(Each difference with its paired bootstrap 95% interval over the shared test examples; "
        "within noise when it includes 0.)"
    )
    grouped = rows[-1].get("layer_groups")
    chart(
        weights_figure(
            rows[-1]["weights"], "mean weight over layer groups" if grouped else "weight in the searched merge"
        ),
        key="recycle_weights",
    )
    if grouped:
        st.caption("The searched merge's weight of each checkpoint in each layer group (the bars: their mean).")
        per_group = pd.DataFrame(grouped["weights"], index=grouped["groups"]).T
        st.dataframe(per_group[(per_group > 0).any(axis=1)].round(4), key="recycle_groups_table")


if job is not None and job.state == "done" and job.id == ss.get("recycle_job"):
    recycle_result(job.result.rows, f"How the searched merge was found: {escape(job.result.origin)}.")
else:
    if recorded is not None:
        how = f"{said_before['objective']}, {said_before['trials']} trials" + (
            ", sparse from the soup" if said_before.get("space") == "sparse" and said_before.get("start") else ""
        )
        recycle_result(
            recorded,
            f"**The lab's recorded table** (recycle.json); Compare with its settings ({how}, seed "
            f"{said_before.get('seed', 0)}) re-derives it by replaying its points.",
        )
