"""``mixlab search`` / ``recycle``: optuna over the simplex (chosen on each benchmark's search data,
reported on its data), and checkpoint recycling against the best single checkpoint and the simple soups."""

from __future__ import annotations

import json
import sys

from mixlab.cli.common import (
    Bar,
    device_options,
    executor,
    executor_options,
    lab_command,
    merge_options,
    method_params,
    open_engine,
    positive,
    sampler_option,
    space_option,
)


def add_commands(sub) -> None:
    s = lab_command(
        sub,
        "search",
        "Search the simplex for the best proxy (optuna): optimises on each benchmark's search_data, reports "
        "the winners on its data; 2-3 objectives give a Pareto front. Resumable: the study lives in the lab.",
        cmd_search,
    )
    merge_options(s, weights=False)
    s.add_argument(
        "--objective",
        action="append",
        default=None,
        help="'mean', a benchmark, or bench=0.5,other=0.5; repeat 2-3 times for a Pareto front (default: mean)",
    )
    s.add_argument("--objectives", default=None, help="a,b: two (or three) benchmarks at once, for a Pareto front")
    sampler_option(s, "tpe", "; nsga2 for 2-3 objectives")
    s.add_argument("--trials", type=positive, default=30, help="trials to run now (default 30)")
    s.add_argument("--budget", type=float, default=None, help="stop after this many full dev evaluations")
    s.add_argument("--fidelity", type=float, default=None, help="score a first subset (e.g. 0.25), prune the weak")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--study", default=None, help="study name (default: from the settings; same name resumes)")
    s.add_argument("--allow-test", action="store_true", help="search benchmarks that have no search_data")
    space_option(s)
    device_options(s)
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    executor_options(s)

    s = lab_command(
        sub,
        "recycle",
        "Checkpoint recycling: the best merge of the lab's experts (a pool of checkpoints) against the best "
        "single checkpoint, the uniform average and a greedy soup; chosen on search_data, reported on data.",
        cmd_recycle,
    )
    s.add_argument("--objective", default="mean", help="'mean', a benchmark, or bench=0.5,other=0.5")
    sampler_option(s, "cmaes")
    s.add_argument("--trials", type=positive, default=40)
    s.add_argument("--seed", type=int, default=0)
    space_option(s)
    s.add_argument(
        "--start",
        action="store_true",
        help="evaluate the greedy soup and the best single checkpoint first (CMA-ES starts at the soup)",
    )
    s.add_argument(
        "--layer-groups",
        type=positive,
        default=1,
        metavar="N",
        help="search a weight per checkpoint in each of N layer groups (runs of consecutive blocks, the input and "
        "output sides included; LoRA-Soups / mergekit-evolve style); 1: one weight per checkpoint",
    )
    s.add_argument("--json", action="store_true", help="print the table as JSON")
    s.add_argument(
        "--fresh",
        action="store_true",
        help="search anew even when the lab's recycle.json recorded a search with these settings (by default its "
        "points are replayed: the same table on any machine, from the cache)",
    )


def cmd_search(args) -> None:
    from mixlab.search import Search

    engine = open_engine(args)
    objectives = args.objective or (args.objectives.split(",") if args.objectives else ["mean"])
    search = Search(
        engine,
        objectives,
        method=args.method,
        params=method_params(args.param),
        sampler=args.sampler,
        seed=args.seed,
        fidelity=args.fidelity,
        allow_test=args.allow_test,
        name=args.study,
        backend=executor(args),
        space=args.space,
    )
    before = engine.store.count()
    with Bar(f"searching ({search.sampler}, study {search.name})", "trial") as bar:
        result = search.run(args.trials, budget=args.budget, progress=bar)
    if args.json:
        best = result.best[0]
        out = {
            "study": result.study,
            "objectives": [o.label() for o in result.objectives],
            "split": result.split,
            "best": {"weights": best["weights"], "score": best["dev"][0], "test": best["test"]},
            "evaluations": engine.store.count() - before,
            "full_evaluations": result.full_evaluations,
            "trials": result.trials,
            "front": result.best if len(result.objectives) > 1 else [],
        }
        print(json.dumps(out, indent=2))
        return
    finished = [t for t in result.trials if t["state"] == "complete"]
    pruned = sum(t["state"] == "pruned" for t in result.trials)
    print(
        f"study {result.study}: {len(result.trials)} trials ({len(finished)} complete, {pruned} pruned), "
        f"{result.full_evaluations:g} full dev evaluations and {engine.store.count() - before} new scores this run; "
        f"searched on {result.split} data"
    )
    if result.split == "test":
        print("warning: searched on the reported data (--allow-test): the scores below are optimistic", file=sys.stderr)
    for b in result.best:
        w = " ".join(f"{n}={x:.3f}" for n, x in b["weights"].items())
        dev = " ".join(f"{v:+.4f}" for v in b["dev"])
        test = " ".join(f"{n} {v:.4f}" for n, v in b["test"].items())
        print(f"  {w}   objective on search data {dev}   on test: {test}")


def cmd_recycle(args) -> None:
    from mixlab.recycle import RECORD, interval_text, recorded_points, recycle, verdict_text, verdicts

    engine = open_engine(args)
    settings = dict(
        objective=args.objective,
        sampler=args.sampler,
        trials=args.trials,
        seed=args.seed,
        space=args.space,
        start=args.start,
        layer_groups=args.layer_groups,
    )
    points = None if args.fresh else recorded_points(engine.lab, method="linear", params={}, **settings)
    before = engine.store.count()
    what = f"replaying {RECORD}'s points" if points else f"searching merge weights of {len(engine.names)} checkpoints"
    with Bar(what, "trial") as bar:
        rows = recycle(
            engine,
            args.objective,
            sampler=args.sampler,
            trials=args.trials,
            seed=args.seed,
            progress=bar,
            replay=points,
            space=args.space,
            start=args.start,
            layer_groups=args.layer_groups,
        )
    new = engine.store.count() - before
    origin = (
        f"replayed the {len(points)} points recorded in {RECORD} (pass --fresh to search anew)"
        if points
        else f"searched {args.trials} trials"
    )
    print(f"{origin}; {new} new evaluation{'s' * (new != 1)}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    benches = list(rows[0]["test"])
    head = f"{'candidate':<24} {'dev objective':>13} {'test objective':>14}  {'vs best single, paired 95% CI':>30}  "
    print(head + "  ".join(f"{b:>9}" for b in benches))
    for r in rows:
        tests = "  ".join(f"{r['test'][b]:>9.4f}" for b in benches)
        vs = interval_text(r.get("vs_best_single"))
        print(f"{r['candidate']:<24} {r['dev_objective']:>13.4f} {r['test_objective']:>14.4f}  {vs:>30}  {tests}")
    searched = rows[-1]
    for v in verdicts(rows):
        print(f"on test, the searched merge is {verdict_text(v)}")
    print(
        "searched weights: "
        + ", ".join(f"{n} {w:.3f}" for n, w in sorted(searched["weights"].items(), key=lambda x: -x[1]))
        + (" (the mean over its layer groups)" if "layer_groups" in searched else "")
    )
    if "layer_groups" in searched:
        groups = searched["layer_groups"]
        for j, name in enumerate(groups["groups"]):
            row = sorted(((n, w[j]) for n, w in groups["weights"].items() if w[j] > 0), key=lambda x: -x[1])
            print(f"  {name}: " + ", ".join(f"{n} {w:.3f}" for n, w in row))
