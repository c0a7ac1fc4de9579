"""``python -m mixlab``: inspect labs, merge, evaluate and sweep from the shell. Thin over the library:
it parses, validates, calls, prints. Errors are one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import traceback
from pathlib import Path

from mixlab.demo import DEMO_LAB
from mixlab.errors import MixlabError

MAX_MIXTURES = 10_000  # a sweep larger than this asks for --max-mixtures (or --yes) first


def _params(pairs: list[str]) -> dict[str, str]:
    out = {}
    for p in pairs or []:
        name, eq, value = p.partition("=")
        if not eq or not name:
            raise MixlabError(f"--param expects NAME=VALUE, got {p!r}")
        out[name.strip()] = value.strip()
    return out


VALUE_OPTIONS = ("--weights",)  # options whose value may start with '-' (a negative weight, said as such)


def _attach_values(argv: list[str]) -> list[str]:
    """``--weights -0.2,0.6,0.6`` as ``--weights=-0.2,0.6,0.6``: argparse takes a value that starts with '-'
    (and is not one plain negative number) for an option, and would say "expected one argument" instead of
    what is wrong with the weights."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if (
            argv[i] in VALUE_OPTIONS
            and i + 1 < len(argv)
            and argv[i + 1].startswith("-")
            and not argv[i + 1].startswith("--")
        ):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


_OPEN: list = []  # engines this command opened, whose warnings are printed at the end


def _engine(args):
    from mixlab.engine import Engine
    from mixlab.lab import load_lab

    engine = Engine(
        load_lab(args.lab), device=getattr(args, "device", None), batch_size=getattr(args, "batch_size", None)
    )
    _OPEN.append(engine)
    return engine


class _Bar:
    """A tqdm bar drawn on the first progress report (so input errors print alone), closed on exit."""

    def __init__(self, desc: str, unit: str = "eval"):
        self.desc, self.unit, self.bar = desc, unit, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()

    def __call__(self, done: int, total: int, message: str = "") -> None:
        from tqdm.auto import tqdm

        if self.bar is None:
            self.bar = tqdm(desc=self.desc, unit=self.unit, total=total, file=sys.stderr)
        self.bar.set_postfix_str(message[-60:], refresh=False)
        self.bar.update(done - self.bar.n)


def _backend(args):
    """The backend ``--backend`` names, with this command's device and batch size for its workers."""
    from mixlab.run.executors import backend

    return backend(
        args.backend,
        args.address,
        args.workers,
        **({"device": args.device, "batch_size": args.batch_size} if args.backend == "ray" else {}),
    )


def _failed(result) -> None:
    """Exit 1 after printing which mixtures failed (their reasons), the rest having been stored."""
    if result.failed:
        print(
            f"error: {result.summary()}; the other scores are cached (run the command again to retry)", file=sys.stderr
        )
        raise SystemExit(1)


def cmd_info(args) -> None:
    engine = _engine(args)
    lab = engine.lab
    print(f"lab {lab.name}  ({lab.root})")
    if lab.manifest.description:
        print(f"  {lab.manifest.description}")
    print(f"base: {lab.manifest.base}  {engine.base.n_params:,} params, {len(engine.base.keys())} tensors")
    print(f"experts ({len(engine.experts)}):")
    for e in engine.experts:
        rank = f"r={e.rank}" if e.rank else ""
        changed = f"{len(e.changed)} of {len(e.keys())} tensors changed"
        print(f"  {e.name:<16} {e.kind:<5} {rank:<6} {e.n_params:>12,} params  {changed}")
    print(f"benchmarks ({len(lab.benchmarks)}):")
    for b in lab.benchmarks:
        print(f"  {b.name:<16} {b.evaluator:<12} {b.data}")
    print(f"true mixtures: {len(lab.manifest.true_mixtures)}")
    if lab.manifest.merge.preset or lab.manifest.merge.exclude:
        kept = engine.excluded_tensors()
        how = f"preset {lab.manifest.merge.preset}" if lab.manifest.merge.preset else "merge.exclude"
        print(f"kept at the base by every merge ({how}): {len(kept)} tensors, {sum(n for _, n in kept):,} params")
    counts = {k: len(engine.cached(k)) for k in ("base", "expert", "true", "proxy")}
    print("cached evaluations: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + f"  ({engine.store.path})")


def cmd_merge(args) -> None:
    from mixlab.simplex import parse_weights

    engine = _engine(args)
    mixture = parse_weights(args.weights, engine.names, normalize=args.normalize)
    if not args.out and not args.mergekit_yaml:
        raise MixlabError("merge needs --out (a model or adapter folder) and/or --mergekit-yaml (a mergekit config)")
    if args.mergekit_yaml:
        from mixlab.interop import save_mergekit, to_mergekit

        text, notes = to_mergekit(engine, mixture, args.method, _params(args.param))
        save_mergekit(Path(args.mergekit_yaml), text)
        print(f"wrote mergekit config {args.mergekit_yaml} (run: mergekit-yaml {args.mergekit_yaml} OUT_DIR)")
        for n in notes:
            print(f"  note: {n}", file=sys.stderr)
        if not args.out:
            return
    with _Bar("merging", "tensor") as bar:
        out = engine.export(
            mixture,
            Path(args.out),
            args.method,
            _params(args.param),
            adapter=args.adapter,
            overwrite=args.overwrite,
            progress=bar,
        )
    print(f"wrote {'PEFT adapter' if args.adapter else 'model'} {out} ({mixture.label()})")


def _print_evals(evals, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "kind": e.kind,
                        "label": e.label,
                        "benchmark": e.benchmark,
                        "metric": e.metric,
                        "score": e.score,
                        "higher_is_better": e.higher_is_better,
                        "n": e.n,
                        "weights": e.weights,
                        "method": e.method,
                        "params": e.params,
                    }
                    for e in evals
                ],
                indent=2,
            )
        )
        return
    for e in evals:
        arrow = "↑" if e.higher_is_better else "↓"
        print(f"{e.benchmark:<16} {e.metric:<9}{arrow} {e.score:.4f}  (n={e.n})")


def cmd_eval(args) -> None:
    from mixlab.simplex import parse_weights

    engine = _engine(args)
    mixture = parse_weights(args.weights, engine.names, normalize=args.normalize)
    if args.backend == "ray":
        if args.refresh:
            raise MixlabError("--refresh is for --backend local (a Ray worker scores what is not cached)")
        result = _backend(args).sweep(engine, [mixture], args.method, _params(args.param), args.benchmark)
        _failed(result)
        evals = result.evaluations
    else:
        with _Bar("evaluating") as bar:
            evals = engine.proxy(
                mixture, args.method, _params(args.param), args.benchmark, refresh=args.refresh, progress=bar
            )
    _print_evals(evals, args.json)


def _grid(engine, grid: str, seed: int, max_mixtures: int) -> list:
    """The mixtures ``--grid`` names, refused (with their count) when more than ``max_mixtures``."""
    from mixlab.simplex import dirichlet, grid_from_step, grid_size, paper_grid

    k = len(engine.names)
    bad = f"--grid must be a step like 0.1, 'paper', 'true' or 'dirichlet:N', got {grid!r}"
    if grid == "paper":
        return list(paper_grid(k, seed))
    if grid == "true":
        points = [engine.lab.true_mixture_weights(t).weights for t in engine.lab.manifest.true_mixtures]
        if not points:
            raise MixlabError(f"lab {engine.lab.name!r} has no true mixtures for --grid true")
        return points
    if grid.startswith("dirichlet:"):
        n = grid.split(":", 1)[1]
        if not n.isdigit() or int(n) < 1:
            raise MixlabError(f"--grid dirichlet:N needs a positive whole number N, got {n!r}")
        count = int(n)
    else:
        try:
            step = float(grid)
        except ValueError:
            raise MixlabError(bad) from None
        if not math.isfinite(step) or not 0 < step <= 1:
            raise MixlabError(f"--grid step must be in (0, 1], like 0.1 or 0.25, got {grid!r}")
        count = grid_size(k, step)
    if count > max_mixtures:
        raise MixlabError(
            f"--grid {grid} makes {count:,} mixtures for K={k} experts, more than {max_mixtures:,}; "
            f"pass --max-mixtures {count} (or --yes) to run it anyway, or choose a coarser grid"
        )
    return list(dirichlet(k, count, 1.0, seed)) if grid.startswith("dirichlet:") else list(grid_from_step(k, step))


def cmd_sweep(args) -> None:
    from mixlab.simplex import Mixture

    engine = _engine(args)
    if args.checkpoints and args.backend != "local":
        raise MixlabError("--checkpoints runs here (a handful of models): drop --backend ray for it")
    if args.checkpoints:
        with _Bar("scoring the base, experts and true mixtures") as bar:
            evals = engine.checkpoint_scores(args.benchmark, progress=bar)
        if args.json:
            _print_evals(evals, True)
        else:
            kinds = {k: len({e.label for e in evals if e.kind == k}) for k in ("base", "expert", "true")}
            print(
                f"{len(evals)} scores: the base, {kinds['expert']} experts and {kinds['true']} true mixtures "
                f"in {engine.store.path}"
            )
        return
    points = _grid(engine, args.grid, args.seed, math.inf if args.yes else args.max_mixtures)
    mixtures = [Mixture.of(engine.names, p, normalize=True) for p in points]
    runner = _backend(args)
    with _Bar(f"sweeping {len(mixtures)} mixtures on the {runner.name} backend", runner.progress_unit) as bar:
        result = runner.sweep(engine, mixtures, args.method, _params(args.param), args.benchmark, progress=bar)
    if args.json:
        _print_evals(result.evaluations, True)
    else:
        print(f"{len(result.evaluations)} scores for {len(mixtures)} mixtures in {engine.store.path}")
    _failed(result)


def cmd_report(args) -> None:
    from mixlab.analysis import MEAN, mean_benchmarks, proxy_report

    engine = _engine(args)
    method, params = engine.resolve_method(args.method, _params(args.param))
    df = engine.results(method, params)
    rows = proxy_report(df, engine.names, engine.lab.benchmarks)
    up = mean_benchmarks(engine.lab.benchmarks, df)
    unscored = engine.unscored()
    if args.json:
        report = {"lab": engine.lab.name, "method": method, "params": params, "mean_of": up, "benchmarks": rows}
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
    print(f"proxy ({label}) vs true mixtures in {engine.lab.name}; '{MEAN}' = mean of {', '.join(up) or 'nothing'}")
    print(
        f"{'benchmark':<14} {'n':>3}  {'Spearman ρ [95% CI]':<26} {'Kendall τ':>9}  {'top-25% ρ':>9}  "
        f"{'pairs ok':>8}  proxy pick: true rank, regret"
    )

    def num(v, fmt="+.3f"):
        return "undefined" if v is None else format(v, fmt)

    for r in rows:
        ci = (
            "undefined"
            if r["spearman"] is None
            else f"{r['spearman']:+.3f} [{r['spearman_low']:+.3f}, {r['spearman_high']:+.3f}]"
        )
        print(
            f"{r['benchmark']:<14} {r['n']:>3}  {ci:<26} {num(r['kendall']):>9}  {num(r['top25_spearman']):>9}  "
            f"{num(r['pairwise_accuracy'], '.3f'):>8}  {r['pick_rank']}, {r['regret']:.4f}"
        )
    for warning in dict.fromkeys(r["warning"] for r in rows if r["warning"]):
        print(f"warning: {warning}")


def cmd_search(args) -> None:
    from mixlab.search import Search

    engine = _engine(args)
    objectives = args.objective or (args.objectives.split(",") if args.objectives else ["mean"])
    search = Search(
        engine,
        objectives,
        method=args.method,
        params=_params(args.param),
        sampler=args.sampler,
        seed=args.seed,
        fidelity=args.fidelity,
        allow_test=args.allow_test,
        name=args.study,
        backend=_backend(args),
    )
    before = engine.store.count()
    with _Bar(f"searching ({search.sampler}, study {search.name})", "trial") as bar:
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


def cmd_pareto(args) -> None:
    from mixlab.analysis import pareto_points

    engine = _engine(args)
    method, params = engine.resolve_method(args.method, _params(args.param))
    bx, by = args.objectives.split(",")
    for b in (bx, by):
        engine.lab.benchmark(b)  # a clear error for an unknown name
    pts = pareto_points(engine.results(method, params), engine.names, bx, by)
    cols = ["kind", "label", "x", "y", *engine.names]
    merges, trained = pts[pts.proxy_front][cols], pts[pts.true_front][cols]
    if args.json:
        front = {"merges": merges.to_dict("records"), "trained": trained.to_dict("records")}
        print(json.dumps({"x": bx, "y": by, "method": method, "params": params} | front, indent=2))
        return
    for title, rows in (("front of merges (experts + proxies)", merges), ("front of trained models", trained)):
        print(f"{title}, {bx} × {by} ({method}):")
        for r in rows.itertuples():
            print(f"  {r.kind:<7} {r.label:<24} {bx} {r.x:.4f}  {by} {r.y:.4f}")


def cmd_recycle(args) -> None:
    from mixlab.recycle import RECORD, recorded_points, recycle, verdicts
    from mixlab.search import Objective

    engine = _engine(args)
    settings = dict(objective=args.objective, sampler=args.sampler, trials=args.trials, seed=args.seed)
    points = None if args.fresh else recorded_points(engine.lab, method="linear", params={}, **settings)
    before = engine.store.count()
    what = f"replaying {RECORD}'s points" if points else f"searching merge weights of {len(engine.names)} checkpoints"
    with _Bar(what, "trial") as bar:
        rows = recycle(
            engine,
            args.objective,
            sampler=args.sampler,
            trials=args.trials,
            seed=args.seed,
            progress=bar,
            replay=points,
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
    print(f"{'candidate':<24} {'dev objective':>13} {'test objective':>14}  " + "  ".join(f"{b:>9}" for b in benches))
    for r in rows:
        tests = "  ".join(f"{r['test'][b]:>9.4f}" for b in benches)
        print(f"{r['candidate']:<24} {r['dev_objective']:>13.4f} {r['test_objective']:>14.4f}  {tests}")
    searched = rows[-1]
    for v in verdicts(rows, Objective.parse(args.objective, engine.lab.benchmarks)):
        noise = f"2 SE = {2 * v['se']:.4f}" if v["noise_known"] else "noise unknown: not an accuracy"
        print(
            f"on test, the searched merge is {v['verdict']} {'of' if v['verdict'] == 'within noise' else 'than'} the "
            f"{v['candidate']} ({v['searched']:.4f} vs {v['other']:.4f}, {v['difference']:+.4f}; {noise})"
        )
    print(
        "searched weights: "
        + ", ".join(f"{n} {w:.3f}" for n, w in sorted(searched["weights"].items(), key=lambda x: -x[1]))
    )


def cmd_regress(args) -> None:
    from mixlab.regression import MODELS, regression_report

    engine = _engine(args)
    method, params = engine.resolve_method(args.method, _params(args.param))
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


def cmd_jobs(args) -> None:
    import time

    from mixlab.run.jobs import Worker, resume

    engine = _engine(args)
    records = engine.store.jobs(engine.lab.name)
    if args.cancel:
        record = next((r for r in records if r["id"] == args.cancel), None)
        if record is None or record["state"] not in ("queued", "running"):
            state = "not recorded" if record is None else record["state"]
            raise MixlabError(
                f"job {args.cancel!r} is {state} in {engine.store.path}; only a running job can be cancelled"
            )
        engine.store.request_cancel(args.cancel)
        print(f"asked process {record['pid']} to cancel job {args.cancel}: it stops at its next progress step")
        return
    if args.resume:
        record = next((r for r in records if r["id"] == args.resume), None)
        if record is None:
            raise MixlabError(f"no job {args.resume!r} in {engine.store.path}; `mixlab jobs LAB` lists them")
        if record["state"] in ("queued", "running"):
            raise MixlabError(f"job {args.resume} is {record['state']} in process {record['pid']}; it is not stopped")
        worker = Worker()
        with _Bar(f"resuming {record['description']}") as bar:
            job = resume(worker, engine, record)
            while job.active:
                bar(job.done, job.total or 1, job.message)
                time.sleep(0.2)
        if job.state != "done":
            raise MixlabError(f"job {args.resume} {job.state}: {job.error or ''}")
        print(f"job {args.resume} done: {len(job.result)} scores in {engine.store.path}")
        return
    if args.json:
        print(json.dumps(records, indent=2))
        return
    if not records:
        print(f"no jobs recorded in {engine.store.path}")
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"]))
        error = f"  ({r['error'].splitlines()[0]})" if r["error"] else ""
        print(f"{r['id']}  {when}  {r['state']:<11} {r['done']}/{r['total']}  {r['description']}{error}")


def cmd_lab_init(args) -> None:
    from mixlab.interop import init_lab

    names = {}
    for pair in args.name or []:
        old, sep, new = pair.partition("=")
        if not sep or not old or not new:
            raise MixlabError(f"--name {pair!r}: give OLD=NEW (an expert folder's name = the expert's name)")
        names[old] = new
    path = init_lab(
        Path(args.dir),
        args.base,
        args.experts,
        args.benchmarks,
        names=names,
        true=args.true,
        weights_from=args.weights_from,
    )
    print(f"wrote {path}; check it with: python -m mixlab info {path.parent}")


def cmd_lab_from_mergekit(args) -> None:
    from mixlab.interop import lab_from_mergekit

    path = lab_from_mergekit(Path(args.config), Path(args.out) if args.out else None, args.name)
    print(f"wrote {path}; add benchmarks, or run: python -m mixlab info {path.parent}")


def demo_budget(args):
    """The demo recipe from ``demo build``'s flags: --quick, --scratch or the default (FULL), then any overrides."""
    from dataclasses import replace

    from mixlab.demo.build import FULL, QUICK, SCRATCH

    budget = QUICK if args.quick else SCRATCH if args.scratch else FULL
    for field in ("base_steps", "base_target", "pretrain_share", "replay"):
        if getattr(args, field) is not None:
            budget = replace(budget, **{field: getattr(args, field)})
    if args.expert_steps is not None:
        budget = replace(budget, steps=args.expert_steps)
    return budget


def cmd_demo_build(args) -> None:
    from mixlab.demo.build import build_demo, build_recycle

    if args.recycle:
        out = build_recycle(out=args.out, trials=args.trials, overwrite=args.overwrite)
        print(f"built recycling lab {out}")
        return
    if args.multimodal:
        from mixlab.demo.vision import build_vl

        out = build_vl(args.out, quick=args.quick, seed=args.seed, overwrite=args.overwrite, budget=demo_budget(args))
        print(f"built multimodal demo lab {out}")
        return

    out = build_demo(
        args.out,
        domains=args.domains,
        quick=args.quick,
        full=args.full,
        seed=args.seed,
        overwrite=args.overwrite,
        budget=demo_budget(args),
    )
    print(f"built demo lab {out}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mixlab", description="Choose data mixtures by merging experts.")
    sub = p.add_subparsers(dest="command", required=True)

    def lab_cmd(name, help_text, fn):
        s = sub.add_parser(name, help=help_text, description=help_text)
        s.add_argument("lab", nargs="?", default=str(DEMO_LAB), help="lab folder or lab.toml (default: the demo lab)")
        s.set_defaults(fn=fn)
        return s

    def merge_opts(s, weights=True):
        if weights:
            s.add_argument("--weights", required=True, help="0.2,0.3,0.5 (expert order) or name=0.2,other=0.8")
            s.add_argument("--normalize", action="store_true", help="rescale weights to sum to 1")
        s.add_argument(
            "--method", default=None, help="linear, task_arithmetic, ties, dare_linear, dare_ties (default: the lab's)"
        )
        s.add_argument(
            "--param", action="append", default=[], metavar="NAME=VALUE", help="method parameter, repeatable"
        )

    def backend_opts(s):
        s.add_argument(
            "--backend", choices=("local", "ray"), default="local", help="where evaluations run (default local)"
        )
        s.add_argument(
            "--address",
            default=None,
            help="--backend ray: 'auto' (a running cluster), ray://host:10001, or none to start one here",
        )
        s.add_argument(
            "--workers", type=_positive, default=None, help="--backend ray: actors (default: one per GPU, else CPU)"
        )

    lab_cmd("info", "Show a lab's experts, benchmarks, true mixtures and cached evaluations.", cmd_info)
    s = lab_cmd("merge", "Merge the experts with mixture weights and write the model.", cmd_merge)
    merge_opts(s)
    s.add_argument("--out", default=None, help="output folder (Hugging Face model, or PEFT adapter with --adapter)")
    s.add_argument(
        "--mergekit-yaml", default=None, metavar="FILE", help="also (or only) write the mergekit config of this merge"
    )
    s.add_argument("--adapter", action="store_true", help="write a rank-concatenated PEFT adapter (linear LoRA merges)")
    s.add_argument(
        "--overwrite", action="store_true", help="replace --out if it is an earlier mixlab export (never other folders)"
    )
    for name, text, fn in (
        ("eval", "Proxy scores of one mixture (cached first).", cmd_eval),
        ("sweep", "Proxy scores over a grid of mixtures; fills the cache.", cmd_sweep),
    ):
        s = lab_cmd(name, text, fn)
        merge_opts(s, weights=name == "eval")
        s.add_argument("--benchmark", action="append", default=None, help="benchmark name, repeatable (default: all)")
        s.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps (default: best available)")
        s.add_argument(
            "--batch-size", type=_positive, default=None, help="rows per forward pass (default: from free memory)"
        )
        s.add_argument("--json", action="store_true", help="print scores as JSON")
        backend_opts(s)
        if name == "eval":
            s.add_argument("--refresh", action="store_true", help="re-evaluate even if cached")
        else:
            s.add_argument(
                "--grid",
                default="0.1",
                help="step like 0.1, 'paper' (the seed paper's presets), 'true' (the lab's true-mixture points) or dirichlet:N",
            )
            s.add_argument("--seed", type=int, default=0, help="seed for Dirichlet draws")
            s.add_argument(
                "--checkpoints",
                action="store_true",
                help="score the lab's checkpoints instead of merges: the base, every expert, every true mixture",
            )
            s.add_argument(
                "--max-mixtures",
                type=_positive,
                default=MAX_MIXTURES,
                help=f"refuse grids larger than this (default {MAX_MIXTURES:,})",
            )
            s.add_argument("--yes", action="store_true", help="run a grid of any size")

    s = lab_cmd(
        "search",
        "Search the simplex for the best proxy (optuna): optimises on each benchmark's search_data, reports "
        "the winners on its data; 2-3 objectives give a Pareto front. Resumable: the study lives in the lab.",
        cmd_search,
    )
    merge_opts(s, weights=False)
    s.add_argument(
        "--objective",
        action="append",
        default=None,
        help="'mean', a benchmark, or bench=0.5,other=0.5; repeat 2-3 times for a Pareto front (default: mean)",
    )
    s.add_argument("--objectives", default=None, help="a,b: two (or three) benchmarks at once, for a Pareto front")
    s.add_argument("--sampler", default="tpe", help="random, grid, cmaes, tpe, gp or nsga2 (default tpe)")
    s.add_argument("--trials", type=_positive, default=30, help="trials to run now (default 30)")
    s.add_argument("--budget", type=float, default=None, help="stop after this many full dev evaluations")
    s.add_argument("--fidelity", type=float, default=None, help="score a first subset (e.g. 0.25), prune the weak")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--study", default=None, help="study name (default: from the settings; same name resumes)")
    s.add_argument("--allow-test", action="store_true", help="search benchmarks that have no search_data")
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps (default: best available)")
    s.add_argument(
        "--batch-size", type=_positive, default=None, help="rows per forward pass (default: from free memory)"
    )
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    backend_opts(s)

    s = lab_cmd(
        "recycle",
        "Checkpoint recycling: the best merge of the lab's experts (a pool of checkpoints) against the best "
        "single checkpoint, the uniform average and a greedy soup; chosen on search_data, reported on data.",
        cmd_recycle,
    )
    s.add_argument("--objective", default="mean", help="'mean', a benchmark, or bench=0.5,other=0.5")
    s.add_argument("--sampler", default="cmaes", help="random, cmaes, tpe or gp (default cmaes)")
    s.add_argument("--trials", type=_positive, default=40)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true", help="print the table as JSON")
    s.add_argument(
        "--fresh",
        action="store_true",
        help="search anew even when the lab's recycle.json recorded a search with these settings (by default its "
        "points are replayed: the same table on any machine, from the cache)",
    )

    s = lab_cmd(
        "jobs",
        "Jobs the dashboard ran on this lab (every session's, kept in the lab's cache), and --resume ID for one "
        "that was interrupted, failed or cancelled (cached scores are not recomputed).",
        cmd_jobs,
    )
    s.add_argument("--resume", default=None, metavar="ID", help="run a stopped job again")
    s.add_argument("--cancel", default=None, metavar="ID", help="ask the process running a job to cancel it")
    s.add_argument("--json", action="store_true", help="print the records as JSON")

    s = lab_cmd("pareto", "The Pareto fronts of cached merges and trained models on two benchmarks.", cmd_pareto)
    merge_opts(s, weights=False)
    s.add_argument("--objectives", required=True, help="two benchmarks: x,y")
    s.add_argument("--json", action="store_true", help="print the fronts as JSON")

    s = lab_cmd(
        "regress",
        "The regression baseline (RegMix-style): predict true scores from mixture weights with n true runs "
        "(linear and gradient-boosted), leave-one-out and by n, beside the merged proxy's ρ.",
        cmd_regress,
    )
    merge_opts(s, weights=False)
    s.add_argument("--benchmark", default="mean", help="a benchmark or 'mean' (default)")
    s.add_argument("--repeats", type=_positive, default=20, help="random subsets per training size (default 20)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true", help="print the report as JSON")

    s = lab_cmd(
        "report",
        "How well cached proxy scores rank the true mixtures, per benchmark and on the mean (one merge method: "
        "the lab's unless --method is given).",
        cmd_report,
    )
    merge_opts(s, weights=False)
    s.add_argument("--json", action="store_true", help="print the report as JSON")

    labs = sub.add_parser("lab", help="Make a lab: from a folder of checkpoints and JSONL, or from a mergekit config.")
    labs_sub = labs.add_subparsers(dest="lab_command", required=True)
    i = labs_sub.add_parser(
        "init",
        help="Write DIR/lab.toml from what is in DIR: the base, PEFT adapters or full fine-tunes, JSONL benchmarks "
        "(evaluators guessed from their fields, stated in comments); then run `mixlab info DIR`.",
    )
    i.add_argument("dir", help="the lab folder")
    i.add_argument("--base", required=True, help="the base model folder (inside DIR)")
    i.add_argument(
        "--experts",
        action="append",
        default=None,
        help="glob of expert folders under DIR, repeatable (default: every PEFT adapter or full fine-tune under DIR)",
    )
    i.add_argument("--name", action="append", help="OLD=NEW: name the expert in folder OLD as NEW (repeatable)")
    i.add_argument("--true", default=None, help="glob of checkpoints trained on mixtures (true mixtures) under DIR")
    i.add_argument(
        "--weights-from",
        default=None,
        help="CSV or JSON with each --true checkpoint's weight per expert (CSV: checkpoint,expert1,expert2,…)",
    )
    i.add_argument("--benchmarks", default="data/*.jsonl", help="glob of JSONL files (default data/*.jsonl)")
    i.set_defaults(fn=cmd_lab_init)
    m = labs_sub.add_parser("from-mergekit", help="Write a lab.toml from a mergekit config's base and models.")
    m.add_argument("config", help="mergekit YAML")
    m.add_argument("--out", default=None, help="lab folder (default: the folder that holds every model)")
    m.add_argument("--name", default=None, help="lab name (default: the config's file name)")
    m.set_defaults(fn=cmd_lab_from_mergekit)

    demo = sub.add_parser("demo", help="The built-in demo lab.")
    demo_sub = demo.add_subparsers(dest="demo_command", required=True)
    b = demo_sub.add_parser("build", help="Train and write the demo lab (minutes on CPU).")
    b.add_argument("--out", type=Path, default=None, help="output folder (default: cache/demo-k3 or cache/demo-k4)")
    b.add_argument("--domains", type=int, default=3, choices=(3, 4))
    b.add_argument("--quick", action="store_true", help="tiny budget, for tests (under a minute)")
    b.add_argument("--full", action="store_true", help="full fine-tune experts instead of LoRA")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--overwrite", action="store_true")
    b.add_argument(
        "--scratch",
        action="store_true",
        help="the earlier recipe: a 120-step base on the tasks alone, 250-step experts",
    )
    b.add_argument(
        "--base-steps",
        type=_positive,
        default=None,
        help="at most this many steps of the base's pretraining (default 2000)",
    )
    b.add_argument(
        "--base-target",
        type=float,
        default=None,
        help="pretrain until every domain's dev exact match reaches this (default 0.2; 0: exactly --base-steps)",
    )
    b.add_argument(
        "--pretrain-share", type=float, default=None, help="share of general data in the base's training (default 0.5)"
    )
    b.add_argument(
        "--recycle",
        action="store_true",
        help="a recycling lab from demo-k3's checkpoints (3 experts + 12 true mixtures): cache/demo-recycle",
    )
    b.add_argument("--trials", type=_positive, default=40, help="--recycle: search trials (default 40)")
    b.add_argument(
        "--multimodal",
        action="store_true",
        help="the vision-language lab (a tiny LLaVA-style model, general/ocr/count/chart): cache/demo-vl",
    )
    b.add_argument("--replay", type=float, default=None, help="share of general data in every expert and true run")
    b.add_argument("--expert-steps", type=_positive, default=None, help="steps per expert and true run (default 60)")
    b.set_defaults(fn=cmd_demo_build)
    return p


def console() -> None:
    """The ``mixlab`` console script (``pip install -e .``)."""
    sys.exit(main())


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(_attach_values(sys.argv[1:] if argv is None else list(argv)))
    _OPEN.clear()
    try:
        args.fn(args)
    except MixlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug in mixlab: still one line, with the way to see more
        if os.environ.get("MIXLAB_DEBUG"):
            traceback.print_exc()
        print(
            f"error: unexpected {type(e).__name__}: {e} (a mixlab bug; MIXLAB_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 2
    finally:
        for engine in _OPEN:
            for w in engine.warnings():
                print(f"warning: {w}", file=sys.stderr)
    return 0
