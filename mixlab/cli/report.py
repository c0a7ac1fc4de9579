"""``mixlab report`` / ``pareto`` / ``regress``: read the cache and say how well the proxies rank the true
mixtures, which merges and trained models are Pareto-optimal, and what a regression on the true runs
predicts. Nothing here evaluates but `report --proxies`, whose output-space proxy is computed each time."""

from __future__ import annotations

import json
import sys

from mixlab.cli.common import lab_command, merge_options, method_params, open_engine, positive
from mixlab.errors import MixlabError


def add_commands(sub) -> None:
    s = lab_command(
        sub, "pareto", "The Pareto fronts of cached merges and trained models on two or three benchmarks.", cmd_pareto
    )
    merge_options(s, weights=False)
    s.add_argument("--objectives", required=True, help="two or three benchmarks: x,y or x,y,z")
    s.add_argument("--json", action="store_true", help="print the fronts as JSON")

    s = lab_command(
        sub,
        "regress",
        "The regression baseline (RegMix-style): predict true scores from mixture weights with n true runs "
        "(linear and gradient-boosted), leave-one-out and by n, beside the merged proxy's ρ.",
        cmd_regress,
    )
    merge_options(s, weights=False)
    s.add_argument("--benchmark", default="mean", help="a benchmark or 'mean' (default)")
    s.add_argument("--repeats", type=positive, default=20, help="random subsets per training size (default 20)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true", help="print the report as JSON")

    s = lab_command(
        sub,
        "report",
        "How well cached proxy scores rank the true mixtures, per benchmark and on the mean (one merge method: "
        "the lab's unless --method is given), each rho beside its noise ceiling (rho between replicates).",
        cmd_report,
    )
    merge_options(s, weights=False)
    s.add_argument(
        "--subset",
        choices=["all", "interior"],
        default="all",
        help="the per-benchmark table over every trained mixture (all, default) or only the interior points "
        "(every expert's weight > 0); the summaries show both",
    )
    s.add_argument(
        "--proxies",
        action="store_true",
        help="also the proxies beside the merge: output-space (computed now: one pass per expert for loss "
        "benchmarks, a decode per mixture for exact match), calibrated and proxy-feature regressions",
    )
    s.add_argument("--json", action="store_true", help="print the report as JSON")


def cmd_report(args) -> None:
    from mixlab.analysis import MEAN, ceiling_text, mean_benchmarks, proxy_report, rho_summaries
    from mixlab.scoring import checkpoints
    from mixlab.scoring.request import Method

    engine = open_engine(args)
    method, params = Method.for_lab(engine.lab, args.method, method_params(args.param)).pair()
    df = engine.results(method, params)
    rows = proxy_report(df, engine.names, engine.lab.benchmarks, subset=args.subset)
    summaries = rho_summaries(df, engine.names, engine.lab.benchmarks)
    up = mean_benchmarks(engine.lab.benchmarks, df)
    unscored = checkpoints.unscored(engine)
    others = []
    if args.proxies:
        from mixlab.proxies.compare import proxies_report

        others = proxies_report(engine, method, params, results=df)
    if args.json:
        report = {"lab": engine.lab.name, "method": method, "params": params, "mean_of": up, "subset": args.subset}
        report |= {"benchmarks": rows, "summaries": summaries} | ({"proxies": others} if args.proxies else {})
        print(json.dumps(report | {"unscored_checkpoints": unscored}, indent=2))
        return
    if unscored["true"] or not any(r["n"] for r in rows):
        print(
            f"note: {unscored['true']} true mixtures have no scores yet (python -m mixlab sweep {engine.lab.root} "
            f"--checkpoints), and the proxies need the same points (python -m mixlab sweep {engine.lab.root} "
            "--grid true)",
            file=sys.stderr,
        )
    label = f"{method} {json.dumps(params, sort_keys=True)}" if params else method
    where = "" if args.subset == "all" else f" ({args.subset} points only)"
    print(
        f"proxy ({label}) vs true mixtures in {engine.lab.name}{where}; '{MEAN}' = mean of {', '.join(up) or 'nothing'}"
    )
    print(
        f"{'benchmark':<14} {'n':>3}  {'Spearman ρ [95% CI]':<26} {'Kendall τ':>9}  {'top-25% ρ':>9}  "
        f"{'pairs ok':>8}  {'proxy pick: true rank, regret':<30}  noise ceiling (ρ between replicates)"
    )

    def num(v, fmt="+.3f"):
        return "undefined" if v is None else format(v, fmt)

    def rho(r) -> str:
        if r["spearman"] is None:
            return "undefined"
        if r["spearman_low"] is None:
            return f"{r['spearman']:+.3f}"
        return f"{r['spearman']:+.3f} [{r['spearman_low']:+.3f}, {r['spearman_high']:+.3f}]"

    for r in rows:
        pick = f"{r['pick_rank']}, {r['regret']:.4f}"
        ceiling = ceiling_text(r["ceiling"], r["ceiling_low"], r["ceiling_high"], r["n_replicated"])
        print(
            f"{r['benchmark']:<14} {r['n']:>3}  {rho(r):<26} {num(r['kendall']):>9}  {num(r['top25_spearman']):>9}  "
            f"{num(r['pairwise_accuracy'], '.3f'):>8}  {pick:<30}  {ceiling}"
        )
    if summaries and any(s["n"] for s in summaries):
        print()
        print(
            "both summaries, for the whole design and its interior points (every expert's weight > 0); a true "
            "mixture trained more than once counts as its replicates' mean"
        )
        print(f"{'design':<9} {'summary':<24} {'n':>3}  {'Spearman ρ [95% CI]':<26} noise ceiling")
        for s_ in summaries:
            ceiling = ceiling_text(s_["ceiling"], s_["ceiling_low"], s_["ceiling_high"], s_["n_replicated"])
            print(f"{s_['subset']:<9} {s_['summary']:<24} {s_['n']:>3}  {rho(s_):<26} {ceiling}")
    if others:
        print()
        print(
            "proxies beside the merge on the same trained mixtures (output-space: the experts' token distributions "
            "mixed; the fitted ones predict each mixture from the other n-1 true runs)"
        )
        print(f"{'proxy':<32} {'design':<9} {'summary':<24} {'n':>3}  {'Spearman ρ [95% CI]':<26} noise ceiling")
        for o in others:
            ceiling = ceiling_text(o["ceiling"], o["ceiling_low"], o["ceiling_high"], o["n_replicated"])
            print(f"{o['proxy']:<32} {o['subset']:<9} {o['summary']:<24} {o['n']:>3}  {rho(o):<26} {ceiling}")
    for warning in dict.fromkeys(r["warning"] for r in rows if r["warning"]):
        print(f"warning: {warning}")


def cmd_pareto(args) -> None:
    from mixlab.analysis import pareto_points
    from mixlab.scoring.request import Method

    engine = open_engine(args)
    method, params = Method.for_lab(engine.lab, args.method, method_params(args.param)).pair()
    benches = args.objectives.split(",")
    if len(benches) not in (2, 3) or len(set(benches)) != len(benches):
        raise MixlabError(
            f"--objectives takes two or three different benchmarks (x,y or x,y,z), got {args.objectives!r}"
        )
    for b in benches:
        engine.lab.benchmark(b)  # a clear error for an unknown name
    axes = ["x", "y", "z"][: len(benches)]
    pts = pareto_points(engine.results(method, params), engine.names, *benches)
    cols = ["kind", "label", *axes, *engine.names]
    merges, trained = pts[pts.proxy_front.astype(bool)][cols], pts[pts.true_front.astype(bool)][cols]
    if args.json:
        front = {"merges": merges.to_dict("records"), "trained": trained.to_dict("records")}
        print(json.dumps(dict(zip(axes, benches)) | {"method": method, "params": params} | front, indent=2))
        return
    for title, rows in (("front of merges (experts + proxies)", merges), ("front of trained models", trained)):
        print(f"{title}, {' × '.join(benches)} ({method}):")
        for r in rows.itertuples():
            scores = "  ".join(f"{b} {getattr(r, a):.4f}" for a, b in zip(axes, benches))
            print(f"  {r.kind:<7} {r.label:<24} {scores}")


def cmd_regress(args) -> None:
    from mixlab.regression import MODELS, regression_report
    from mixlab.scoring.request import Method

    engine = open_engine(args)
    method, params = Method.for_lab(engine.lab, args.method, method_params(args.param)).pair()
    df = engine.results(method, params)
    rep = regression_report(
        df, engine.names, engine.lab.benchmarks, args.benchmark, repeats=args.repeats, seed=args.seed
    )
    if args.json:
        print(json.dumps(rep | {"method": method, "params": params}, indent=2))
        return

    def num(v):
        return "undefined" if v is None else f"{v:+.3f}"

    label = f"{method} {json.dumps(params, sort_keys=True)}" if params else method
    print(
        f"{engine.lab.name}, {args.benchmark}: n={rep['n']} true runs; proxy ({label}) ρ {num(rep['proxy_spearman'])}"
    )
    print("regression on the true runs, leave-one-out ρ: " + ", ".join(f"{m} {num(rep['loo'].get(m))}" for m in MODELS))
    if rep["curve"]:
        print(f"{'n train':>7}  " + "  ".join(f"{m + ' ρ (median [IQR])':>30}" for m in MODELS))
        for row in rep["curve"]:
            cells = [f"{num(row[m])} [{num(row[m + '_low'])}, {num(row[m + '_high'])}]" for m in MODELS]
            print(f"{row['n_train']:>7}  " + "  ".join(f"{c:>30}" for c in cells))
