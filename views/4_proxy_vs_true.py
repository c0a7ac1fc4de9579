"""Proxy vs true: do merged proxies rank mixtures like models trained on them?"""

import pandas as pd
import streamlit as st

from mixlab.analysis import (
    MEAN,
    SUBSETS,
    ceiling_text,
    method_comparison,
    paired,
    proxy_report,
    readable,
    rho_summaries,
    subset_of,
    tie_ranks,
)
from mixlab.plots import proxy_true_figure
from mixlab.tables import of_method, params_label
from views.state import engine, results
from views.text import code, escape
from views.widgets import (
    benchmark_options,
    benchmark_picker,
    chart,
    missing_scores_note,
    proxy_method_picker,
    stacking_columns,
)

st.title("Proxy vs true")
eng = engine()
df = results(eng)
missing_scores_note(eng)
if not eng.lab.manifest.true_mixtures:
    st.info("This lab lists no true mixtures (models trained on a mixture): add them to its lab.toml.")
    st.stop()
if df.empty or not (df.kind == "proxy").any() or not (df.kind == "true").any():
    st.info(
        "This page needs true-mixture scores and proxy scores at the same mixtures: run "
        f"{code(f'python -m mixlab sweep {eng.lab.root} --checkpoints')} and "
        f"{code(f'python -m mixlab sweep {eng.lab.root} --grid true')}."
    )
    st.stop()
c1, c2, c3 = st.columns([2, 2, 1])
bench = benchmark_picker(benchmark_options(df, eng), c1)
method, params = proxy_method_picker(eng, c2)
subset = c3.radio(
    "Mixtures",
    list(SUBSETS),
    horizontal=True,
    key="pvt_subset",
    help="; ".join(f"{k}: {v}" for k, v in SUBSETS.items()),
)
rows = of_method(df, method, params)

# the same report as `python -m mixlab report` (mixlab.analysis.proxy_report), without the page's mean rows
summary = proxy_report(rows[rows.benchmark != MEAN], eng.names, eng.lab.benchmarks, subset=subset)
pairs = subset_of(paired(rows, eng.names, bench), eng.names, subset)
row = next((r for r in summary if r["benchmark"] == bench), None)  # None: no mixture has both scores
hib = bool(df[df.benchmark == bench].higher_is_better.iloc[0])


def num(v) -> str:
    return "undefined" if v is None else f"{v:+.3f}"


rho = row["spearman"] if row else None
if rho is None:
    ci = "n < 3"
elif row["spearman_low"] is None:  # too few mixtures to rank: the library gives no CI
    ci = f"(no CI: n={row['n']})"
else:
    ci = f"[{row['spearman_low']:+.3f}, {row['spearman_high']:+.3f}]"
cols = stacking_columns("pvt_headline", [3, 1, 1, 2, 1])
if rho is None:
    headline = num(rho)
elif row["warning"]:  # a bootstrap over a handful of mixtures says little: the warning below says how little
    headline = f"{rho:+.2f} (no CI: n={row['n']})"
else:
    headline = f"{rho:+.2f} [{row['spearman_low']:+.2f}, {row['spearman_high']:+.2f}]"
cols[0].metric("Spearman ρ [95% CI]", headline, help="percentile bootstrap over the paired mixtures (2000 resamples)")
cols[1].metric("Kendall τ", num(row["kendall"] if row else None))
cols[2].metric("Mixtures (n)", row["n"] if row else 0)
if row and row["warning"]:
    st.warning(row["warning"])
if row:
    cols[3].metric("Proxy's pick: rank under true", row["pick_rank"], help=f"regret {row['regret']:.4f}")
    ceiling = ceiling_text(row["ceiling"], row["ceiling_low"], row["ceiling_high"], row["n_replicated"])
    cols[4].metric(
        "Noise ceiling",
        "—" if row["ceiling"] is None else f"{row['ceiling']:+.2f}",
        help="Spearman ρ between two replicates (seeds) of the true models, replicate 1 against replicate 2: "
        "how well the true models rank themselves. List several checkpoints of a mixture as paths = [...] in "
        "lab.toml to measure it; the proxy is then compared with the replicates' mean.",
    )
    st.caption(
        f"Spearman ρ {num(rho)} {ci} · {ceiling} · Kendall τ {num(row['kendall'])} (n={row['n']}) · the mixture "
        f"the proxy ranks first, **{escape(row['pick'])}**, is {row['pick_rank']} under the true scores "
        f"(regret {row['regret']:.4f}; scores equal up to float noise tie)."
    )
left, right = stacking_columns("pvt_main", [3, 2])  # below 1280 px the table goes under the figure, whole
with left:
    arrow = "↑" if hib else "↓"
    c1, c2 = st.columns(2)
    axes = c1.radio(
        "Axes",
        ["ranks", "scores"],
        horizontal=True,
        key="pvt_axes",
        help="ranks: 1 = best on both axes, so a proxy that ranks like the trained models puts every point on "
        "y = x whatever its scale; scores: the raw numbers",
    )
    colour = c2.selectbox(
        "Colour by the weight of", ["(none)", *eng.names], key="pvt_colour", help="where in the simplex the proxy fails"
    )
    fig = proxy_true_figure(
        pairs,
        f"proxy rank: {bench}" if axes == "ranks" else f"proxy score: {bench} {arrow}",
        f"true rank: {bench}" if axes == "ranks" else f"true score: {bench} {arrow}",
        hib,
        ranks=axes == "ranks",
        colour_by=None if colour == "(none)" else colour,
    )
    chart(fig, key="pvt_scatter", width="stretch")
    st.caption(
        "□ the proxy's pick (its best among the trained mixtures), ◇ the best trained mixture; dashed: y = x. "
        "Points far from the diagonal are mixtures the proxy misjudges."
    )
with right:
    table = pairs.assign(proxy_rank=tie_ranks(pairs.proxy, hib), true_rank=tie_ranks(pairs.true, hib))
    # the scores and ranks first (the weights, also in each trained mixture's name, after them): in this
    # column at 1440 px the last columns scroll, and those were the scores
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        height=480,
        key="pvt_table",
        column_order=["label", "proxy", "true", "proxy_rank", "true_rank", *eng.names],
        column_config={"label": st.column_config.TextColumn(pinned=True)},
    )
st.markdown(
    "**All benchmarks** — top-25% ρ: Spearman among the best quarter of mixtures by true score; pairs ok: the "
    "fraction of mixture pairs the proxy orders like the trained models (0.5 = chance)"
)
table = (
    pd.DataFrame(summary)
    .assign(
        ceiling=[ceiling_text(r["ceiling"], r["ceiling_low"], r["ceiling_high"], r["n_replicated"]) for r in summary]
    )
    .drop(columns=["higher_is_better", "n_top25", "pick_true_rank", "pick_tied", "warning"])
    .drop(columns=["ceiling_low", "ceiling_high", "n_replicated"])
    .rename(
        columns={
            "spearman": "Spearman ρ",
            "spearman_low": "ρ 95% low",
            "spearman_high": "ρ 95% high",
            "kendall": "Kendall τ",
            "top25_spearman": "top-25% ρ",
            "pairwise_accuracy": "pairs ok",
            "pick": "proxy's pick",
            "pick_rank": "its true rank",
            "ceiling": "noise ceiling",
        }
    )
)
st.dataframe(readable(table), hide_index=True, width="stretch", key="pvt_summary")

st.markdown(
    "**Both summaries** — ρ of the mean (the proxy's mean over benchmarks against the true mean) and the mean of "
    "per-benchmark ρ, for every trained mixture and for the interior points, each beside its noise ceiling"
)
both = rho_summaries(rows[rows.benchmark != MEAN], eng.names, eng.lab.benchmarks)
st.dataframe(
    readable(
        pd.DataFrame(
            [
                {
                    "mixtures": s["subset"],
                    "summary": s["summary"],
                    "n": s["n"],
                    "Spearman ρ": s["spearman"],
                    "ρ 95% low": s["spearman_low"],
                    "ρ 95% high": s["spearman_high"],
                    "noise ceiling": ceiling_text(s["ceiling"], s["ceiling_low"], s["ceiling_high"], s["n_replicated"]),
                }
                for s in both
            ]
        )
    ),
    hide_index=True,
    width="stretch",
    key="pvt_both",
)

st.markdown(
    f"**Merge methods side by side** on {escape(bench)}: each method's proxies against the same trained mixtures "
    f"(cache more with {code(f'python -m mixlab sweep {eng.lab.root} --grid true --method ties')})"
)
compare = method_comparison(df[df.benchmark != MEAN], eng.names, eng.lab.benchmarks, bench)
compare = compare.drop(columns=["pick_true_rank", "pick_tied"])
compare = compare.assign(params=compare.params.map(params_label)).rename(
    columns={
        "spearman": "Spearman ρ",
        "spearman_low": "ρ 95% low",
        "spearman_high": "ρ 95% high",
        "top25_spearman": "top-25% ρ",
        "pairwise_accuracy": "pairs ok",
        "pick_rank": "pick's true rank",
    }
)
st.dataframe(readable(compare), hide_index=True, width="stretch", key="pvt_methods")
