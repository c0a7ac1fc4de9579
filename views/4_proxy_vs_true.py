"""Proxy vs true: do merged proxies rank mixtures like models trained on them?"""

import pandas as pd
import streamlit as st

from mixlab.analysis import MEAN, paired, proxy_report, rank_correlation, regret
from mixlab.plots import proxy_true_figure
from views._shared import benchmark_options, engine, of_method, proxy_method_picker, results

st.title("Proxy vs true")
eng = engine()
df = results(eng)
if df.empty or not (df.kind == "proxy").any() or not (df.kind == "true").any():
    st.info("This page needs cached proxy scores and true-mixture scores at the same mixtures.")
    st.stop()
c1, c2 = st.columns(2)
bench = c1.selectbox("Benchmark", benchmark_options(df, eng), key="pvt_bench")
method, params = proxy_method_picker(df, "pvt_method", c2)
rows = of_method(df, method, params)

# the same report as `python -m mixlab report` (mixlab.analysis.proxy_report), without the page's mean rows
summary = proxy_report(rows[rows.benchmark != MEAN], eng.names, eng.lab.benchmarks)
pairs = paired(rows, eng.names, bench)
rho = rank_correlation(pairs.proxy, pairs.true, "spearman")
tau = rank_correlation(pairs.proxy, pairs.true, "kendall")
hib = bool(df[df.benchmark == bench].higher_is_better.iloc[0])
cols = st.columns(4)
cols[0].metric(
    "Spearman ρ",
    "undefined" if rho.value is None else f"{rho.value:+.3f}",
    help="95% bootstrap CI: " + ("n < 3" if rho.value is None else f"[{rho.low:+.3f}, {rho.high:+.3f}]"),
)
cols[1].metric(
    "Kendall τ",
    "undefined" if tau.value is None else f"{tau.value:+.3f}",
    help="95% bootstrap CI: " + ("n < 3" if tau.value is None else f"[{tau.low:+.3f}, {tau.high:+.3f}]"),
)
cols[2].metric("Mixtures (n)", rho.n)
if len(pairs):
    reg = regret(pairs.proxy, pairs.true, hib)
    cols[3].metric("Proxy's pick: rank under true", f"{reg.true_rank} of {reg.n}", help=f"regret {reg.regret:.4f}")
    st.caption(
        f"{rho.describe()} · {tau.describe()} · the mixture the proxy ranks first, "
        f"**{pairs.label.iloc[reg.chosen]}**, is #{reg.true_rank} under the true scores (regret {reg.regret:.4f})."
    )
left, right = st.columns([3, 2])
with left:
    arrow = "↑" if hib else "↓"
    st.plotly_chart(
        proxy_true_figure(pairs, f"proxy score: {bench} {arrow}", f"true score: {bench} {arrow}"),
        key="pvt_scatter",
        width="stretch",
    )
with right:
    table = pairs.assign(
        proxy_rank=pairs.proxy.rank(ascending=not hib).astype(int),
        true_rank=pairs.true.rank(ascending=not hib).astype(int),
    )
    st.dataframe(table, hide_index=True, width="stretch", height=480, key="pvt_table")
st.markdown(
    "**All benchmarks** — top-25% ρ: Spearman among the best quarter of mixtures by true score; pairs ok: the "
    "fraction of mixture pairs the proxy orders like the trained models (0.5 = chance)"
)
table = (
    pd.DataFrame(summary)
    .drop(columns=["higher_is_better", "n_top25"])
    .rename(
        columns={
            "spearman": "Spearman ρ",
            "spearman_low": "ρ 95% low",
            "spearman_high": "ρ 95% high",
            "kendall": "Kendall τ",
            "top25_spearman": "top-25% ρ",
            "pairwise_accuracy": "pairs ok",
            "pick": "proxy's pick",
            "pick_true_rank": "its true rank",
        }
    )
)
st.dataframe(table.round(3), hide_index=True, width="stretch", key="pvt_summary")
