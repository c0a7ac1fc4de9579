"""Proxy vs true: do merged proxies rank mixtures like models trained on them?"""

import pandas as pd
import streamlit as st

from mixlab.analysis import paired, rank_correlation, regret
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

summary = []
for b in benchmark_options(df, eng):
    pairs = paired(rows, eng.names, b)
    rho = rank_correlation(pairs.proxy, pairs.true, "spearman")
    tau = rank_correlation(pairs.proxy, pairs.true, "kendall", n_boot=0)
    hib = bool(df[df.benchmark == b].higher_is_better.iloc[0])
    reg = regret(pairs.proxy, pairs.true, hib) if len(pairs) else None
    summary.append(
        {
            "benchmark": b,
            "n": rho.n,
            "Spearman ρ": rho.value,
            "ρ 95% CI": f"[{rho.low:+.2f}, {rho.high:+.2f}]" if rho.value is not None else "undefined",
            "Kendall τ": tau.value,
            "proxy's pick: true rank": reg.true_rank if reg else None,
            "regret": reg.regret if reg else None,
        }
    )

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
st.markdown("**All benchmarks**")
st.dataframe(pd.DataFrame(summary), hide_index=True, width="stretch", key="pvt_summary")
