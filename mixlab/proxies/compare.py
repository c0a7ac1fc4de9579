"""Every proxy of a lab side by side on the same trained mixtures: the weight-space merge, the output-space
proxy and the fitted proxies, each with both summaries where it has them and the noise ceiling beside it —
the table ``python -m mixlab report --proxies`` prints and ``bench/proxy_study.py`` collects."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from mixlab.analysis import MEAN, SUBSETS, mean_benchmarks, noise_ceiling, rho_summaries, with_mean
from mixlab.proxies.fitted import FITTED, fitted_report
from mixlab.proxies.output import output_space_results

COLUMNS = ("proxy", "subset", "summary", "n", "spearman", "spearman_low", "spearman_high")
COLUMNS += ("ceiling", "ceiling_low", "ceiling_high", "n_replicated")


def proxies_report(
    engine,
    method: str,
    params: dict,
    *,
    output_space: bool = True,
    subsets: Sequence[str] = tuple(SUBSETS),
    n_boot: int = 2000,
    results: pd.DataFrame | None = None,
    benchmarks: Sequence[str] | None = None,
) -> list[dict]:
    """One row per (proxy, subset, summary), columns :data:`COLUMNS`:

    - ``merge (<method>)``: the cached merged proxies (both summaries, :func:`mixlab.analysis.rho_summaries`);
    - ``output-space``: p_w = Σ wᵢ pᵢ at the trained mixtures (computed now: a pass per expert for loss
      benchmarks, a decode per mixture for exact match; skipped when ``output_space`` is False);
    - ``calibrated`` / ``proxy features`` / ``weights only``: leave-one-out predictions of the true mean, each
      fitted on the other n − 1 trained mixtures (:func:`mixlab.proxies.fitted.fitted_report`): ρ of the mean.

    ``results``: the engine's rows for ``method`` (read from the cache when not given); ``benchmarks``: the
    ones the output-space proxy scores (default: every one it can)."""
    df = engine.results(method, params) if results is None else results
    names, specs = engine.names, engine.lab.benchmarks
    label = f"merge ({method})"
    rows = [{"proxy": label} | r for r in rho_summaries(df, names, specs, subsets, n_boot=n_boot)]
    true = df[df.kind == "true"]
    if output_space and len(true):
        points = [[w.get(n, 0.0) for n in names] for w in true.drop_duplicates("label").weights]
        out = output_space_results(engine, points, benchmarks)
        both = pd.concat([df[df.kind != "proxy"], out], ignore_index=True)
        rows += [{"proxy": "output-space"} | r for r in rho_summaries(both, names, specs, subsets, n_boot=n_boot)]
    if mean_benchmarks(specs, df):
        mean = with_mean(df, mean_benchmarks(specs, df))
        for subset in subsets:
            fit = fitted_report(df, names, specs, sizes=[], subset=subset, n_boot=n_boot)
            ceil = noise_ceiling(mean, names, MEAN, subset, n_boot)
            for kind in FITTED:
                loo = fit["loo"].get(kind) or {"spearman": None, "spearman_low": None, "spearman_high": None}
                rows.append(
                    {"proxy": f"{kind} (leave one out)", "subset": subset, "summary": "ρ of the mean", "n": fit["n"]}
                    | {k: loo[k] for k in ("spearman", "spearman_low", "spearman_high")}
                    | {"ceiling": ceil.value, "ceiling_low": ceil.low, "ceiling_high": ceil.high}
                    | {"n_replicated": ceil.n}
                )
    return [{c: r.get(c) for c in COLUMNS} for r in rows]
