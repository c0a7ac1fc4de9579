"""When do merged proxies rank mixtures like models trained on them? Builds small K=3 demo-lab variants
(seeded, CPU), each with ``--seeds`` independent seeds (a new base, experts and true mixtures per seed) and
``--replicates`` training runs of every true mixture (for the noise ceiling), and prints one table: per
variant, seed and proxy, Spearman ρ with its 95% bootstrap CI beside the noise ceiling (ρ between two
seeds of the *true* models, same mixtures, with its CI), for every trained mixture and for the interior
points (every weight > 0, the seed paper's design), both as ρ of the mean of the exact-match benchmarks and
as the mean of per-benchmark ρ; then the same averaged over seeds; then what the base and the experts can do
(the regime check: each expert on every domain beside the base).

    python bench/proxy_study.py [--variants short,regime] [--seeds 0,1,2] [--points 4] [--n-eval 1000]
                                [--replicates 2] [--jobs 2] [--json FILE]

Variants (each a fresh lab in a temp folder, true mixtures on the 1/m lattice, m = --points):
- scratch: the earlier shipped recipe — a 120-step base on the task domains, 250-step LoRA experts;
- pretrained: the base pretrained on every domain plus general data (half the examples) until partly able in
  each domain (dev exact match ≥ --base-target), then 250-step runs;
- replay: pretrained, and every expert / true-mixture run replays 50% general data;
- short: pretrained, expert and true-mixture runs of 60 steps (the shipped labs' recipe, `demo build`'s default);
- regime: short with LoRA learning rate 1e-3 instead of 3e-3, same budget (issue #26's recipe, chosen before
  any run of this script, not swept).
Proxies (rows): the merges (linear, task arithmetic λ=2, TIES density 0.5), the output-space proxy (the
experts' token distributions mixed), and the fitted ones, each mixture predicted from the other n − 1 true
runs (calibrated: per-benchmark affine maps of the linear merge's scores; proxy features: a regression on
weights + the merge's scores; weights only). Nothing here is tuned towards a number: the table is what one
run gives. ``--tiny``: a seconds-scale recipe to check the script and time its parts, not a result.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mixlab.demo.build import FULL, QUICK, SCRATCH, build_demo  # noqa: E402
from mixlab.engine import Engine  # noqa: E402
from mixlab.lab import load_lab  # noqa: E402
from mixlab.proxies.compare import proxies_report  # noqa: E402
from mixlab.scoring import checkpoints  # noqa: E402
from mixlab.simplex import Mixture, lattice  # noqa: E402
from mixlab.store import Store  # noqa: E402

METHODS = [("linear", {}), ("task_arithmetic", {"scale": 2.0}), ("ties", {"density": 0.5})]
SUBSETS = ("all", "interior")
REGIME_LR = 1e-3  # issue #26: decided in advance, not swept


def variants(base_target: float) -> dict:
    pre = replace(FULL, base_target=base_target, steps=250)  # pretrained base, long (250-step) runs
    short = replace(pre, steps=60)  # with the default target: FULL, the shipped labs' recipe
    return {
        "scratch": SCRATCH,
        "pretrained": pre,
        "replay": replace(pre, replay=0.5),
        "short": short,
        "regime": replace(short, lr=REGIME_LR),
    }


def fmt(v, spec: str = "+.2f") -> str:
    return "undef" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def interval(value, low, high) -> str:
    return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"


def regime_check(engine, exact: list[str]) -> dict:
    """Exact match of the base and of each expert on every domain (forgetting: an expert below the base on
    another domain)."""
    base = {e.benchmark: e.score for e in checkpoints.base_scores(engine, exact)}
    experts = {(e.label, e.benchmark): e.score for e in checkpoints.expert_scores(engine, exact)}
    return {"base": base} | {n: {b: experts[n, b] for b in exact} for n in engine.names}


def study(name: str, budget, points, seed: int, replicates: int, root: Path, boot: int) -> tuple[list[dict], dict]:
    """One lab (variant × seed): its proxies_report rows for every method, and its regime check."""
    start = time.perf_counter()
    lab_dir = build_demo(
        root / f"{name}-s{seed}",
        domains=3,
        seed=seed,
        budget=budget,
        points=points,
        proxy_grid=False,
        replicates=replicates,
        show_progress=False,
    )
    built = time.perf_counter() - start
    engine = Engine(
        load_lab(lab_dir),
        Store(":memory:", seed_from=lab_dir / "evaluations.jsonl"),
        device="cpu",
    )
    exact = [b.name for b in engine.lab.benchmarks if b.evaluator == "exact_match"]
    check = regime_check(engine, exact)
    mixtures = [Mixture.of(engine.names, p) for p in points]
    rows = []
    for method, params in METHODS:
        engine.sweep(mixtures, method, params, exact)
        linear = method == "linear"
        report = proxies_report(
            engine, method, params, output_space=linear, subsets=SUBSETS, benchmarks=exact, n_boot=boot
        )
        label = {"linear": "linear", "task_arithmetic": "task arithmetic λ=2", "ties": "TIES density 0.5"}[method]
        for r in report:
            if r["proxy"].startswith("merge"):
                r["proxy"] = f"merge: {label}"
            elif not linear:
                continue  # the output-space and fitted rows once, from the linear merge's lab
            rows.append(r | {"variant": name, "seed": seed})
    seconds = time.perf_counter() - start
    info = json.loads((lab_dir / "build_info.json").read_text())
    check |= {"base_steps": info["base_steps_taken"], "build_seconds": round(built), "seconds": round(seconds)}
    return rows, check


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # --jobs labs side by side: one core each (the demo model is launch-bound)


def averaged(rows: list[dict]) -> list[dict]:
    """Per (variant, proxy, subset, summary): the seeds' ρ and ceilings, their mean and range."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["proxy"], r["subset"], r["summary"]), []).append(r)
    out = []
    for (variant, proxy, subset, summary), rs in groups.items():
        rho = [r["spearman"] for r in rs if r["spearman"] is not None]
        ceil = [r["ceiling"] for r in rs if r["ceiling"] is not None]
        out.append(
            {"variant": variant, "proxy": proxy, "subset": subset, "summary": summary, "seeds": len(rs)}
            | {"n": rs[0]["n"], "rho_mean": float(np.mean(rho)) if rho else None}
            | {"rho_min": min(rho) if rho else None, "rho_max": max(rho) if rho else None}
            | {"ceiling_mean": float(np.mean(ceil)) if ceil else None}
            | {"ceiling_min": min(ceil) if ceil else None, "ceiling_max": max(ceil) if ceil else None}
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=4, help="true mixtures on the 1/m lattice (m=4: 15 points)")
    ap.add_argument("--base-target", type=float, default=FULL.base_target, help="the base's dev exact match goal")
    ap.add_argument("--variants", default="short,regime")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds: one whole lab per seed")
    ap.add_argument("--replicates", type=int, default=2, help="training runs per true mixture (≥ 2: a ceiling)")
    ap.add_argument("--n-eval", type=int, default=1000, help="held-out examples per benchmark (dev and test)")
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples per CI")
    ap.add_argument("--jobs", type=int, default=1, help="labs built side by side, one process and torch thread each")
    ap.add_argument("--json", type=Path, default=None, help="also write every row here (rewritten as each lab ends)")
    ap.add_argument("--tiny", action="store_true", help="a seconds-scale recipe to check the script (no result)")
    ap.add_argument("--from-json", type=Path, default=None, help="print the tables of a run saved with --json")
    args = ap.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        print(f"{args.from_json}: {'' if saved['complete'] else 'an unfinished run: '}{saved['args']}\n")
        print_tables(saved["rows"], saved["mean"], saved["checks"])
        return
    points = lattice(3, args.points)
    every = variants(args.base_target)
    chosen = args.variants.split(",")
    unknown = [v for v in chosen if v not in every]
    if unknown:
        ap.error(f"unknown variant {unknown[0]!r}; available: {', '.join(every)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    print(
        f"K=3 demo variants {', '.join(chosen)}; seeds {seeds}; {len(points)} true mixtures (1/{args.points} "
        f"lattice), {args.replicates} runs each; {args.n_eval} examples per benchmark{' (--tiny)' if args.tiny else ''}"
    )
    rows, checks = [], {}
    start = time.perf_counter()
    labs = []
    for name in chosen:
        budget = replace(QUICK if args.tiny else every[name], n_eval=args.n_eval)
        if args.tiny and name == "regime":
            budget = replace(budget, lr=REGIME_LR)
        labs += [(name, budget, seed) for seed in seeds]
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(args.jobs, initializer=_one_thread) as pool:
        futures = [
            pool.submit(study, name, budget, points, seed, args.replicates, Path(tmp), args.boot)
            for name, budget, seed in labs
        ]
        for (name, _, seed), future in zip(labs, futures, strict=True):  # in order: the table reads the same
            got, check = future.result()
            rows += got
            checks[f"{name} seed {seed}"] = check
            print(f"  {name} seed {seed}: {check['seconds']} s (build {check['build_seconds']} s)", flush=True)
            if args.json:
                write_json(args, rows, averaged(rows), checks, (time.perf_counter() - start) / 60, done=False)
    total = time.perf_counter() - start
    print(f"\n{total / 60:.1f} minutes in all\n")
    mean = averaged(rows)
    print_tables(rows, mean, checks)
    if args.json:
        write_json(args, rows, mean, checks, total / 60, done=True)


def print_tables(rows: list[dict], mean: list[dict], checks: dict) -> None:
    """Every row; the seeds' mean; each proxy on the mean of the benchmarks, seed by seed (the README's
    table); the regime check."""
    print("| variant | seed | proxy | mixtures | summary | n | Spearman ρ [95% CI] | noise ceiling [95% CI] (n) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ceiling = interval(r["ceiling"], r["ceiling_low"], r["ceiling_high"]) + f" ({r['n_replicated']})"
        rho = interval(r["spearman"], r["spearman_low"], r["spearman_high"])
        print(
            f"| {r['variant']} | {r['seed']} | {r['proxy']} | {r['subset']} | {r['summary']} | {r['n']} | {rho} | {ceiling} |"
        )
    seeds = sorted({r["seed"] for r in rows})
    print(f"\nOver the {len(seeds)} seeds: mean ρ (min, max) beside the mean ceiling (min, max)\n")
    print("| variant | proxy | mixtures | summary | n | ρ: mean (min, max) | ceiling: mean (min, max) |")
    print("|---|---|---|---|---|---|---|")
    for m in mean:
        rho = f"{fmt(m['rho_mean'])} ({fmt(m['rho_min'])}, {fmt(m['rho_max'])})"
        ceil = f"{fmt(m['ceiling_mean'])} ({fmt(m['ceiling_min'])}, {fmt(m['ceiling_max'])})"
        print(f"| {m['variant']} | {m['proxy']} | {m['subset']} | {m['summary']} | {m['n']} | {rho} | {ceil} |")
    for subset in SUBSETS:
        by_seed = [r for r in rows if r["subset"] == subset and r["summary"] == "ρ of the mean"]
        if not by_seed or not any(r["spearman"] is not None for r in by_seed):
            continue
        n = max(r["n"] for r in by_seed)
        print(f"\nρ of the mean, {subset} mixtures (n = {n}), seed by seed [95% CI]; the noise ceiling\n")
        print(f"| variant | proxy | {' | '.join(f'seed {s}' for s in seeds)} | mean | ceiling: mean (min, max) |")
        print(f"|---|---|{'---|' * len(seeds)}---|---|")
        for m in mean:
            if m["subset"] != subset or m["summary"] != "ρ of the mean":
                continue
            cells = {r["seed"]: r for r in by_seed if (r["variant"], r["proxy"]) == (m["variant"], m["proxy"])}
            got = [
                interval(c["spearman"], c["spearman_low"], c["spearman_high"]) if (c := cells.get(s)) else "—"
                for s in seeds
            ]
            ceil = f"{fmt(m['ceiling_mean'])} ({fmt(m['ceiling_min'])}, {fmt(m['ceiling_max'])})"
            print(f"| {m['variant']} | {m['proxy']} | {' | '.join(got)} | {fmt(m['rho_mean'])} | {ceil} |")
    print("\nRegime check, exact match on each domain (base, then each expert):\n")
    for key, c in checks.items():
        parts = [f"{who} " + "/".join(f"{c[who][b]:.2f}" for b in c["base"]) for who in c if isinstance(c[who], dict)]
        print(f"- {key} (base {c['base_steps']} steps): " + " · ".join(parts))


def write_json(args, rows: list[dict], mean: list[dict], checks: dict, minutes: float, done: bool) -> None:
    every = {"args": vars(args) | {"json": str(args.json)}, "complete": done, "rows": rows, "mean": mean}
    text = json.dumps(every | {"checks": checks, "minutes": minutes}, indent=1, default=str)
    args.json.write_text(text)


if __name__ == "__main__":
    main()
