"""Held-out regret of search at equal cost, on every shipped lab.

    nice python bench/search.py [--labs demo-k3,demo-k4,demo-vl,demo-recycle] [--seeds 5] [--trials 10] [--keep DIR]

Per lab, the objective is the mean of the higher-is-better benchmarks. Every contender chooses on **dev**
(each benchmark's ``search_data``) and is reported by the **test** score of its pick (``data``):

- each sampler (CMA-ES; TPE when ``--trials`` exceeds its 10 random start-up trials; on the recycling pool
  also CMA-ES in the sparse box started from the greedy soup and the best single checkpoint) with
  ``--trials`` dev evaluations, per seed;
- random search with the same number of dev evaluations, per seed (the yardstick);
- the grid's dev pick at the grid's full cost: the grid is the seed paper's presets (``paper_grid``: the
  1/8 lattice's interior for K=3, 20 Dirichlet draws and the centre for K=4) where the lab ships their test
  scores, else every mixture the lab ships test scores for (the recycling pool's merges); each is scored
  on dev, the best on dev reported on test.

Regret is the test objective of the best grid mixture *on test* (an oracle no contender can see) minus the
test objective of the pick. Reported: median and interquartile range over the seeds, the dev evaluations
spent, and the noise band of a test difference, 2·√(SE_a² + SE_b²) at the picks' scores (binomial standard
errors of the mean accuracy; unpaired, so it overstates the noise of two picks scored on the same examples).

Scores come from a copy of the lab's shipped cache (``evaluations.jsonl``): a cached evaluation is free, and
the number of new ones is printed. ``--keep DIR`` keeps that copy and the studies in DIR, so a run cut short
is finished by running it again (its studies resume, its scores are cached). Counts evaluations, not
seconds; nothing asserts.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mixlab.demo import LABS_DIR  # noqa: E402
from mixlab.engine import Engine  # noqa: E402
from mixlab.lab import load_lab  # noqa: E402
from mixlab.scoring import proxy  # noqa: E402
from mixlab.search import Search, standard_error  # noqa: E402
from mixlab.simplex import Mixture, paper_grid  # noqa: E402
from mixlab.store import Store  # noqa: E402

LABS = ("demo-k3", "demo-k4", "demo-vl", "demo-recycle")


def quartiles(values: list[float]) -> str:
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return f"{med:.4f} [{q1:.4f}, {q3:.4f}]"


def bench_lab(name: str, seeds: int, trials: int, device: str, folder: Path) -> None:
    lab = load_lab(LABS_DIR / name)
    store = Store(folder / f"{name}.sqlite", seed_from=lab.root / "evaluations.jsonl")
    engine = Engine(lab, store, device=device)
    shipped_rows = store.count()
    started = time.time()
    probe = Search(engine, ["mean"], storage=None)
    objective, names = probe.objectives[0], engine.names

    def test_row(weights) -> dict:
        return probe._winner(Mixture.of(names, list(weights), normalize=True), [float("nan")])

    # the grid: the paper's presets the lab ships test scores for, else every mixture it ships them for
    shipped = [
        m
        for m in (Mixture.of(names, list(w), normalize=True) for w in paper_grid(len(names)))
        if proxy.lookup(engine, engine.request([m], "linear", {}, probe.used)) is not None
    ]
    if len(shipped) < len(paper_grid(len(names))) / 2:  # not swept with the presets (the recycling pool)
        cached = engine.results("linear", {})
        cached = cached[(cached.kind == "proxy") & cached.benchmark.isin(probe.used)]
        wide = cached.pivot_table(index=list(names), columns="benchmark", values="score", aggfunc="first")
        shipped = [Mixture.of(names, list(w), normalize=True) for w in wide.dropna(subset=probe.used).index]
    grid = [list(m.weights) for m in shipped]
    print(f"  [{name}] grid of {len(grid)}", file=sys.stderr)
    grid_dev = [probe.dev_values(Mixture.of(names, w, normalize=True))[0] for w in grid]
    grid_test = [test_row(w) for w in grid]
    oracle = max(r["test_objective"][0] for r in grid_test)
    pick = grid_test[int(np.argmax(grid_dev))]

    contenders = [("random", "random", "simplex", False), ("cmaes", "cmaes", "simplex", False)]
    if trials > 10:  # TPE's first 10 trials are random draws
        contenders.append(("tpe", "tpe", "simplex", False))
    if len(names) > 4:  # the recycling pool: sparse merges are plausible
        contenders.append(("cmaes sparse+start", "cmaes", "sparse", True))
    starts = []
    if any(c[3] for c in contenders):
        from mixlab.recycle import recycle

        rows = recycle(engine, sampler="random", trials=1, seed=0)  # the greedy soup and best single, chosen on dev
        starts = [rows[2]["weights"], rows[0]["weights"]]
    results: dict[str, list[dict]] = {}
    for label, sampler, space, start in contenders:
        results[label] = []
        for seed in range(seeds):
            search = Search(
                engine,
                ["mean"],
                sampler=sampler,
                seed=seed,
                space=space,
                storage=f"sqlite:///{folder / 'studies.sqlite'}",
                name=f"{name}-{label}-{seed}",
            )
            left = max(0, trials - search.finished_trials())  # a kept study run again: only what is left
            result = search.run(left, start=starts if start else ())
            results[label].append(result.best[0])
            print(f"  [{name}] {label} seed {seed}: {store.count() - shipped_rows} new scores", file=sys.stderr)

    k = len(names)
    print(
        f"\n{name}: K={k}, objective {objective.describe()}; grid = the {len(grid)} mixtures shipped with test "
        f"scores; oracle (best of the grid on test) {oracle:.4f}"
    )
    print(f"{'contender':<22} {'dev evals':>9}  {'test objective: median [IQR]':<30} {'regret: median [IQR]':<30}")
    print(
        f"{'grid dev pick':<22} {len(grid):>9}  {pick['test_objective'][0]:<30.4f} {oracle - pick['test_objective'][0]:<30.4f}"
    )
    medians = {}
    for label, bests in results.items():
        test = [b["test_objective"][0] for b in bests]
        medians[label] = (float(np.median(test)), bests[int(np.argsort(test)[len(test) // 2])])
        regret = [oracle - t for t in test]
        print(f"{label:<22} {trials:>9}  {quartiles(test):<30} {quartiles(regret):<30}")
    base_med, base_row = medians["random"]
    for label, (med, row) in medians.items():
        if label == "random":
            continue
        se_a, se_b = standard_error(row, objective), standard_error(base_row, objective)
        band = 2 * math.sqrt(se_a**2 + se_b**2) if se_a is not None and se_b is not None else math.nan
        said = "within noise of" if abs(med - base_med) <= band else ("beats" if med > base_med else "loses to")
        print(f"  {label} vs random (medians): {med - base_med:+.4f}, noise band ±{band:.4f}: {said} random")
    se_g, se_r = standard_error(pick, objective), standard_error(base_row, objective)
    band = 2 * math.sqrt(se_g**2 + se_r**2)
    diff = pick["test_objective"][0] - base_med
    said = "within noise of" if abs(diff) <= band else ("beats" if diff > 0 else "loses to")
    print(f"  grid dev pick ({len(grid)} evals) vs random ({trials}): {diff:+.4f}, band ±{band:.4f}: {said} random")
    print(f"  new evaluations: {store.count() - shipped_rows} ({time.time() - started:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labs", default=",".join(LABS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--keep", default=None, help="a folder to keep the scores and studies in (default: a temp one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(args.keep or temp)
        folder.mkdir(parents=True, exist_ok=True)
        for name in args.labs.split(","):
            bench_lab(name, args.seeds, args.trials, args.device, folder)


if __name__ == "__main__":
    main()
