"""Lab: pick a lab and see what it holds."""

import pandas as pd
import streamlit as st

from mixlab.analysis import MEAN, ceiling_text, format_score, interval_caption, leaderboard, proxy_report
from mixlab.context import DIFFERENCE_CAPTION
from mixlab.demo import DEMO_LAB, LABS_DIR
from mixlab.errors import MixlabError
from mixlab.interop.lab_init import NoWorkspace, init_lab, workspace_folder
from mixlab.run.jobs import resume
from mixlab.run.records import ACTIVE, STOPPED
from mixlab.run.requests import RESUMABLE, CheckpointsJob
from mixlab.scoring import cached as cached_scores
from mixlab.summary import lab_summary
from mixlab.tables import of_method
from views.jobs import current_job, job_panel, submit, worker
from views.state import engine, lab_path, open_lab, results
from views.text import code, escape, show_error
from views.widgets import (
    backend_picker,
    benchmark_options,
    benchmark_picker,
    missing_scores_note,
    proxy_method_picker,
    stacking_columns,
)

st.title("Lab")
shipped = sorted(p.parent.name for p in LABS_DIR.glob("*/lab.toml") if not p.parent.name.startswith("."))


def _open_shipped() -> None:
    open_lab(str(LABS_DIR / st.session_state.lab_shipped))


# compact, one row: the page opens on the open lab's results below
pick_shipped, pick_path = st.columns([1, 2], vertical_alignment="bottom")
pick_shipped.selectbox(
    "Shipped labs",
    shipped,
    index=None,
    placeholder="open a shipped lab…",
    key="lab_shipped",
    on_change=_open_shipped,
    help="demo-k3 and demo-k4: text domains; demo-recycle: a pool of checkpoints; demo-vl: a vision-language lab",
)
with pick_path.form("lab_picker", border=False):
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    path = c1.text_input(
        "Lab folder or lab.toml",
        value=lab_path(),
        key="lab_input",
        help=f"The demo lab is {DEMO_LAB}. Any folder with a lab.toml works.",
    )
    if c2.form_submit_button("Open"):
        open_lab(path.strip())  # the URL follows (app.py), so a reload or a shared link opens this lab
        st.rerun()


def new_lab_from_a_folder() -> None:
    """lab init from the page: only inside $MIXLAB_WORKSPACE (mixlab.interop.lab_init.workspace_folder)."""
    with st.form("lab_init"):
        c1, c2, c3, c4 = st.columns(4)
        folder = c1.text_input("Folder", key="init_dir", help="a folder inside $MIXLAB_WORKSPACE")
        base = c2.text_input("Base model folder (inside it)", "base", key="init_base")
        experts = c3.text_input("Experts (glob)", "experts/*", key="init_experts")
        benchmarks = c4.text_input("Benchmarks (glob)", "data/*.jsonl", key="init_benchmarks")
        asked = st.form_submit_button("Preview lab.toml")
    args = (folder.strip(), base.strip(), experts.strip(), benchmarks.strip())
    command = (
        f"python -m mixlab lab init {args[0] or 'DIR'} --base {args[1]} --experts '{args[2]}' --benchmarks '{args[3]}'"
    )
    if asked:
        st.session_state.pop("init_preview", None)
        try:
            root = workspace_folder(args[0])
            st.session_state.init_preview = (args, init_lab(root, *args[1:], write=False))
        except NoWorkspace as e:
            said = str(e)  # mixlab's own words (no user data): its code span stays one
            st.info(f"{said[0].upper()}{said[1:]}. From a shell: {code(command)}")
        except MixlabError as e:
            show_error("Cannot make a lab there", e)
    preview = st.session_state.get("init_preview")
    if preview is not None and preview[0] == args:
        st.code(preview[1], language="toml")
        if st.button("Write lab.toml and open the lab", key="init_write"):
            try:
                written = init_lab(workspace_folder(args[0]), *args[1:])
            except MixlabError as e:
                show_error("Cannot make a lab there", e)
            else:
                st.session_state.pop("init_preview", None)
                open_lab(str(written.parent))
                st.rerun()


with st.expander("New lab from a folder: a base, PEFT adapters or full fine-tunes, JSONL benchmarks"):
    new_lab_from_a_folder()

eng = engine()
lab = eng.lab
summary = lab_summary(eng)  # the checkpoints as last loaded, kept beside the cache (no model stack needed)
st.subheader(lab.name)
if lab.manifest.description:
    st.caption(escape(lab.manifest.description))
for warning in summary["warnings"]:  # the store's notices are shown on every page already
    st.warning(escape(warning))


def results_first() -> None:
    """The lab's answer before its configuration: ρ with its CI, and a leaderboard on one benchmark."""
    df = results(eng)
    if df.empty:
        return
    c1, c2 = st.columns(2)
    bench = benchmark_picker(benchmark_options(df, eng), c1, help="'mean' averages the higher-is-better benchmarks")
    method, params = proxy_method_picker(eng, c2)
    rows = of_method(df, method, params)
    report = proxy_report(rows[rows.benchmark != MEAN], eng.names, lab.benchmarks)
    row = next((r for r in report if r["benchmark"] == bench), None)
    cols = stacking_columns("lab_headline", [2, 1, 1])
    if row is None:
        cols[0].metric("Spearman ρ [95% CI]", "no pairs", help="no mixture has both a proxy and a true score here")
    elif row["spearman"] is None:
        cols[0].metric("Spearman ρ [95% CI]", f"undefined (n={row['n']})")
    elif row["warning"]:
        cols[0].metric("Spearman ρ [95% CI]", f"{row['spearman']:+.2f} (no CI: n={row['n']})")
    else:
        ci = f"[{row['spearman_low']:+.2f}, {row['spearman_high']:+.2f}]"
        ceiling = ceiling_text(row["ceiling"], row["ceiling_low"], row["ceiling_high"], row["n_replicated"])
        cols[0].metric(
            "Spearman ρ [95% CI]", f"{row['spearman']:+.2f} {ci}", help=f"proxy vs true, bootstrap; {ceiling}"
        )
    cols[1].metric("True mixtures paired (n)", row["n"] if row else 0)
    cols[2].metric("Proxy's pick among them", row["pick_rank"] if row else "—", help="its rank under the true scores")
    if row and row["warning"]:
        st.warning(row["warning"])
    board = leaderboard(rows, eng.names, bench)
    if len(board):
        shown = pd.DataFrame(
            {
                "model": board.model,
                f"{bench} [95% CI]": [format_score(*v) for v in zip(board.score, board.low, board.high)],
                "n": ["—" if pd.isna(v) else str(int(v)) for v in board.n],
                "vs the first [95% CI]": [
                    "" if pd.isna(d) else f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}] {how}"
                    for d, lo, hi, how in zip(board["diff"], board.diff_low, board.diff_high, board.diff_how)
                ],
                "true model there [95% CI]": [
                    "" if m != "proxy's best merge" else ("not trained" if pd.isna(t) else format_score(t, lo, hi))
                    for m, t, lo, hi in zip(board.model, board.true_at_pick, board.true_at_low, board.true_at_high)
                ],
                "mixture": board.mixture,  # last: a long one (K=15, a name after the weights) runs off the edge
            }
        )
        st.markdown(
            f"**Leaderboard on {escape(bench)}** (best first; the proxy's best merge is the best of every cached proxy, trained there or not)"
        )
        st.dataframe(
            shown,
            hide_index=True,
            width="stretch",
            key="lab_leaderboard",
        )
        st.caption(
            f"{interval_caption(board.ci)}. 'vs the first': the difference from the top row with its 95% interval, "
            f"{DIFFERENCE_CAPTION}"
        )


results_first()
counts = {k: len(cached_scores.cached(eng, k)) for k in ("base", "expert", "true", "proxy")}
cols = st.columns(5)
cols[0].metric("Experts", len(eng.names))
cols[1].metric("Benchmarks", len(lab.benchmarks))
cols[2].metric("True mixtures", len(lab.manifest.true_mixtures))
cols[3].metric("Cached proxy scores", counts["proxy"])
cols[4].metric("Cached other scores", counts["base"] + counts["expert"] + counts["true"])

missing_scores_note(eng)
backend_picker()
job = current_job()
if st.button(
    "Score checkpoints",
    key="lab_score_checkpoints",
    disabled=job is not None and job.active,
    help="Evaluate the base, every expert and every true mixture on every benchmark (cached scores are reused); "
    f"the same as python -m mixlab sweep {lab.root} --checkpoints",
):
    submit(CheckpointsJob(), f"checkpoints of {lab.name}")
job_panel()

base = summary["base"]
st.markdown(
    f"**Base** {code(lab.manifest.base)} — {base['n_params']:,} parameters in {base['n_tensors']} tensors, "
    f"fingerprint `{base['fingerprint'][:12]}`"
)
kept = summary["kept_at_base"]
if kept:
    merge = lab.manifest.merge
    n_kept = sum(n for _, n in kept)
    how = (f"preset **{merge.preset}**" if merge.preset else "") + (
        (" and " if merge.preset else "") + f"exclude {code(', '.join(merge.exclude))}" if merge.exclude else ""
    )
    st.markdown(
        f"**Kept at the base by every merge** ({how}): {len(kept)} tensors, {n_kept:,} parameters "
        f"({n_kept / base['n_params']:.0%} of the model)."
    )
    with st.expander("Which tensors"):
        st.dataframe(
            pd.DataFrame(kept, columns=["tensor", "parameters"]), hide_index=True, width="stretch", key="lab_kept"
        )


def table(title: str, rows: list[dict], **kw) -> None:
    st.markdown(title)
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", **kw)


table(
    "**Experts**",
    [
        {
            "expert": e["name"],
            "kind": e["kind"],
            "rank": str(e["rank"]) if e["rank"] is not None else "— (full)",
            "trainable params": e["n_params"],
            # counted when the summary is made (mixlab.summary: LoRA, or a base under 1 GiB); else `mixlab info`
            "tensors changed": f"{e['n_tensors']} (count: mixlab info)"
            if e["changed"] is None
            else f"{e['changed']} of {e['n_tensors']}",
            "fingerprint": e["fingerprint"][:12],
        }
        for e in summary["experts"]
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
            "source": ", ".join(t.checkpoints) or "scores in lab.toml",
        }
        for t in lab.manifest.true_mixtures
    ],
    height=260,
)
st.caption(
    f"Evaluation cache: {code(eng.store.path)} — {counts['proxy']:,} proxy scores; {counts['base']:,} of the base, "
    f"{counts['expert']:,} of experts and {counts['true']:,} of true mixtures"
)

records = eng.store.jobs(lab.name)
if records:
    st.markdown("**Jobs** (every session's, kept in the lab's cache: a restarted app still lists them)")
    jobs_table = pd.DataFrame(
        [
            {
                "job": r["description"],
                "state": r["state"],
                "progress": f"{r['done']}/{r['total']}" if r["total"] else "",
                "started": pd.Timestamp(r["created"], unit="s").strftime("%Y-%m-%d %H:%M:%S"),
                "error": r["error"] or "",
            }
            for r in records
        ]
    )
    st.dataframe(jobs_table, hide_index=True, width="stretch", key="lab_jobs")
    running = [r for r in records if r["state"] in ACTIVE]
    if running:
        c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
        pick = c1.selectbox(
            "Cancel a running job (any session's, or another app's or CLI's on this cache)",
            range(len(running)),
            format_func=lambda i: f"{running[i]['description']} ({running[i]['done']}/{running[i]['total']})",
            key="lab_cancel_pick",
        )
        if c2.button("Cancel job", key="lab_cancel"):
            try:
                eng.store.request_cancel(running[pick]["id"])
            except MixlabError as e:  # a read-only cache
                show_error("Cannot ask", e)
            else:
                st.toast("Asked to cancel: it stops at its next progress step (scores finished so far stay cached).")
    stopped = [r for r in records if r["state"] in STOPPED and r["kind"] in RESUMABLE]
    if stopped:
        pick = st.selectbox(
            "Resume a stopped job (scores already cached are not recomputed)",
            range(len(stopped)),
            format_func=lambda i: f"{stopped[i]['description']} ({stopped[i]['state']})",
            key="lab_resume_pick",
        )
        if st.button("Resume", key="lab_resume"):
            try:
                st.session_state.last_job = resume(worker(), eng, stopped[pick]).id
            except MixlabError as e:  # another process resumed it first, or its record is corrupt
                show_error("Cannot resume", e)
            else:
                st.rerun()
