"""When do merged proxies rank mixtures like models trained on them? Builds small K=3 demo-lab variants
(seeded, CPU) and prints, per variant and merge method: Spearman ρ on the mean of the exact-match
benchmarks with its 95% bootstrap CI, the top-25% ρ, the pairwise decision accuracy, the proxy pick's true
rank and regret, and ρ per benchmark with its CI; and what the base and the experts can do.

    python bench/proxy_study.py [--points 4] [--base-target 0.2] [--variants scratch,pretrained,...]

Variants (each a fresh lab in a temp folder, true mixtures on the 1/m lattice):
- scratch: the earlier shipped recipe — a 120-step base on the task domains, 250-step LoRA experts;
- pretrained: the base pretrained on every domain plus general data (half the examples) until partly able in
  each domain (dev exact match ≥ --base-target), then 250-step runs;
- replay: pretrained, and every expert / true-mixture run replays 50% general data;
- short: pretrained, expert and true-mixture runs of 60 steps (the shipped labs' recipe, `demo build`'s default).
Beside the merge methods, the proxies of :mod:`mixlab.proxies` on the same mixtures (ρ of the mean, 95% CI):
the output-space proxy (the experts' token distributions mixed) and the fitted ones, each mixture predicted
from the other n − 1 true runs (calibrated per-benchmark affine maps, a regression on weights + proxy scores,
and one on the weights only).
Nothing here is tuned towards a number: the table is what one run gives.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mixlab.analysis import MEAN, proxy_report, rank_label  # noqa: E402
from mixlab.demo.build import FULL, SCRATCH, build_demo  # noqa: E402
from mixlab.engine import Engine  # noqa: E402
from mixlab.lab import load_lab  # noqa: E402
from mixlab.proxies.compare import proxies_report  # noqa: E402
from mixlab.scoring import checkpoints  # noqa: E402
from mixlab.simplex import Mixture, lattice  # noqa: E402

METHODS = [("linear", {}), ("task_arithmetic", {"scale": 2.0}), ("ties", {"density": 0.5})]


def variants(base_target: float) -> dict:
    pre = replace(FULL, base_target=base_target, steps=250)  # pretrained base, long (250-step) runs
    return {
        "scratch": SCRATCH,
        "pretrained": pre,
        "replay": replace(pre, replay=0.5),
        "short": replace(pre, steps=60),  # with the default target: FULL, the shipped labs' recipe
    }


def study(name: str, budget, points, seed: int, root: Path) -> list[str]:
    start = time.perf_counter()
    lab_dir = build_demo(root / name, domains=3, seed=seed, budget=budget, points=points, proxy_grid=False)
    base_steps = json.loads((lab_dir / "build_info.json").read_text())["base_steps_taken"]
    engine = Engine(load_lab(lab_dir), device="cpu")
    exact = [b.name for b in engine.lab.benchmarks if b.evaluator == "exact_match"]
    base = {e.benchmark: e.score for e in checkpoints.base_scores(engine, exact)}
    own = {e.label: e.score for e in checkpoints.expert_scores(engine, exact) if e.benchmark == e.label}
    lines = [
        f"{name}: base ({base_steps} steps) exact match {', '.join(f'{b} {base[b]:.2f}' for b in exact)}; "
        "each expert on its own "
        f"domain {', '.join(f'{n} {own[n]:.2f}' for n in engine.names)} ({time.perf_counter() - start:.0f} s)"
    ]
    mixtures = [Mixture.of(engine.names, p) for p in points]
    for method, params in METHODS:
        engine.sweep(mixtures, method, params, exact)
        rows = {
            r["benchmark"]: r for r in proxy_report(engine.results(method, params), engine.names, engine.lab.benchmarks)
        }
        m = rows[MEAN]

        def f(v, fmt="+.2f"):
            return "undef" if v is None else format(v, fmt)

        per = " · ".join(
            f"{b} {f(rows[b]['spearman'])} [{f(rows[b]['spearman_low'])}, {f(rows[b]['spearman_high'])}]" for b in exact
        )
        label = f"{method} {params}" if params else method
        lines.append(
            f"| {name} | {label} | {m['n']} | {f(m['spearman'])} [{f(m['spearman_low'])}, {f(m['spearman_high'])}] | "
            f"{f(m['top25_spearman'])} | {f(m['pairwise_accuracy'], '.2f')} | {rank_label(m['pick_true_rank'], m['pick_tied'])}, "
            f"{m['regret']:.3f} | {per} |"
        )
    # the proxies beside the merge, on the same mixtures: ρ of the mean with its CI (no per-benchmark detail)
    for o in proxies_report(engine, "linear", {}, subsets=("all",), benchmarks=exact):
        if o["proxy"].startswith("merge") or o["summary"] != "ρ of the mean":
            continue
        rho = f"{f(o['spearman'])} [{f(o['spearman_low'])}, {f(o['spearman_high'])}]"
        lines.append(f"| {name} | {o['proxy']} | {o['n']} | {rho} | | | | |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=4, help="true mixtures on the 1/m lattice (m=4: 15 points)")
    ap.add_argument("--base-target", type=float, default=FULL.base_target, help="the base's dev exact match goal")
    ap.add_argument("--variants", default="scratch,pretrained,replay,short")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    points = lattice(3, args.points)
    all_variants = variants(args.base_target)
    chosen = args.variants.split(",")
    print(
        f"K=3 demo variants, {len(points)} true mixtures (1/{args.points} lattice), seed {args.seed}; proxy metrics on "
        "the mean of the exact-match benchmarks"
    )
    print(
        "| variant | method | n | Spearman ρ [95% CI] | top-25% ρ | pairwise acc. | pick: true rank, regret "
        "| ρ per benchmark [95% CI] |"
    )
    print("|---|---|---|---|---|---|---|---|")
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            first, *rows = study(name, all_variants[name], points, args.seed, Path(tmp))
            notes.append(first)
            print("\n".join(rows), flush=True)
    print()
    print("\n".join(notes))


if __name__ == "__main__":
    main()
