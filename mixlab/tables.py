"""The read side's tables: filters and per-method views over the results frame (``Engine.results()``,
one row per cached score). One home for the rules a page and the CLI would otherwise each write:

- :func:`of_method`: the one filter for a merge method's rows (every non-proxy row, and the proxy rows of
  one (method, params));
- :func:`proxy_methods`: the (method, params) pairs a lab has proxies for, the lab's own first;
- :func:`mixture_rows`: one mixture's proxy scores under one method, and :func:`labelled_scores` (the
  same with the weights, method and params on every row: a CSV that says what it scored);
- :func:`method_table`: merge methods side by side on a two-benchmark plane (the Pareto page's table);
- :func:`fronts`: the front of merges and the front of trained models, as rows to list;
- :func:`front_counts`: how many merges and experts lie on the front of merges.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mixlab.analysis import method_fronts, weights_key

SCORE_COLUMNS = ("benchmark", "metric", "score", "higher_is_better", "n", "seconds", "device")


def params_label(params: dict | None) -> str:
    """A method's parameters as a page or a CSV shows them: sorted JSON, or "defaults" when there are none."""
    return json.dumps(params, sort_keys=True) if params else "defaults"


def of_method(results: pd.DataFrame, method: str, params: dict) -> pd.DataFrame:
    """Every non-proxy row (base, experts, true mixtures), and the proxy rows of one (method, params)."""
    keep = [
        k != "proxy" or (m == method and p == params) for k, m, p in zip(results.kind, results.method, results.params)
    ]
    return results[np.asarray(keep, dtype=bool)]  # a mask even when empty (df[[]] would select no columns)


def proxy_methods(results: pd.DataFrame, lab_default: tuple[str, dict]) -> list[tuple[str, dict]]:
    """The (method, params) pairs that have cached proxy scores, the lab's default first, then sorted by
    name and params; ``[("linear", {})]`` when there are none (what a first sweep would make)."""
    proxy = results[results.kind == "proxy"] if len(results) else results
    found = {(m, json.dumps(p, sort_keys=True)) for m, p in zip(proxy.method, proxy.params)}
    first = (lab_default[0], json.dumps(lab_default[1], sort_keys=True))
    return [(m, json.loads(p)) for m, p in sorted(found, key=lambda o: (o != first, o))] or [("linear", {})]


def mixture_rows(
    results: pd.DataFrame, names: Sequence[str], weights: dict[str, float], method: str, params: dict
) -> pd.DataFrame:
    """The proxy scores of one mixture (``weights`` by expert name, matched at the cache's rounding) under
    one (method, resolved params): benchmark, metric, score, direction, n, seconds, device."""
    rows = of_method(results, method, params)
    key = weights_key(weights, names)
    mine = [k == "proxy" and weights_key(w, names) == key for k, w in zip(rows.kind, rows.weights)]
    return rows[np.asarray(mine, dtype=bool)][list(SCORE_COLUMNS)].reset_index(drop=True)


def labelled_scores(table: pd.DataFrame, weights: dict[str, float], method: str, params: dict) -> pd.DataFrame:
    """:func:`mixture_rows`' table with a column per expert weight, the method and its params label on every
    row."""
    shown = pd.DataFrame([weights] * len(table), index=table.index)
    return pd.concat([table, shown], axis=1).assign(method=method, params=params_label(params))


def method_table(results: pd.DataFrame, names: Sequence[str], bx: str, by: str) -> tuple[pd.DataFrame, int]:
    """:func:`mixlab.analysis.method_fronts` as a table to read: params labelled, the "best" columns named
    by their benchmark; with the number of mixtures every method shares."""
    fair, n_shared = method_fronts(results, names, bx, by)
    fair = fair.assign(params=fair.params.map(params_label)).rename(
        columns={"best x": f"best {bx}", "best y": f"best {by}"}
    )
    return fair, n_shared


def fronts(points: pd.DataFrame, names: Sequence[str]) -> dict[str, pd.DataFrame]:
    """:func:`mixlab.analysis.pareto_points`' two fronts as rows (kind, mixture in its one label format, x, y,
    z with a third objective, a weight per expert): ``merges`` (experts + proxies: what merging checkpoints
    reaches), ``trained`` (experts + true mixtures)."""
    cols = ["kind", "mixture", "x", "y", *(["z"] if "z" in points else []), *names]
    front = {c: points[c].astype(bool) for c in ("proxy_front", "true_front")}  # a mask even when empty
    return {"merges": points[front["proxy_front"]][cols], "trained": points[front["true_front"]][cols]}


def front_counts(points: pd.DataFrame) -> dict[str, int]:
    """On :func:`mixlab.analysis.pareto_points`' plane: merged mixtures on the front of merges, single experts
    on it, and single experts in all."""
    experts = points.kind == "expert"
    return {
        "merges": int((points.proxy_front & (points.kind == "proxy")).sum()),
        "experts_on_front": int((points.proxy_front & experts).sum()),
        "experts": int(experts.sum()),
    }
