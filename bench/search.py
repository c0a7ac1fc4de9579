"""How many evaluations search needs: samplers against the 66-point grid, and on the recycling lab.

    python bench/search.py [--seeds 5] [--trials 30] [--device cpu|cuda] [--part grid,recycle]

grid: on demo-k3, the objective is the mean exact match on the benchmarks' own data (so the grid and the
samplers see the same numbers; a real search would optimise on search_data). The 66-point step-0.1 grid
is scored first; then, per sampler (CMA-ES, TPE, random) and seed, the number of evaluations until the
best-so-far is within 1% of the objective's range over the grid of the grid's best (or "not in N").

recycle: on demo-recycle (15 checkpoints), objective the mean on search_data. At an equal budget of
--trials full evaluations: CMA-ES vs random (best dev objective, median over seeds); and TPE with
--fidelity 0.25 (a quarter of the dev examples first, the top third continues): the full evaluations it
spends to reach plain TPE's best at that budget.

Counts evaluations, not seconds: the numbers do not depend on the machine. Nothing asserts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mixlab.demo import LABS_DIR  # noqa: E402
from mixlab.engine import Engine  # noqa: E402
from mixlab.lab import load_lab  # noqa: E402
from mixlab.search import Objective, Search  # noqa: E402
from mixlab.simplex import Mixture, grid_from_step  # noqa: E402
from mixlab.store import Store  # noqa: E402


def first_reach(values: list[float], target: float) -> int | None:
    """1-based index of the first value ≥ target, in trial order (None if never)."""
    return next((i + 1 for i, v in enumerate(values) if v >= target), None)


def grid_part(seeds: int, trials: int, device: str) -> None:
    lab = load_lab(LABS_DIR / "demo-k3")
    engine = Engine(lab, Store(":memory:"), device=device)
    objective = Objective.parse("mean", lab.benchmarks)
    hib = {b.name: b.higher_is_better for b in lab.benchmarks}
    grid = [Mixture.of(engine.names, w) for w in grid_from_step(3, 0.1)]
    engine.sweep(grid, "linear", benchmarks=objective.names)
    values = []
    for m in grid:
        scores = {e.benchmark: e.score for e in engine.proxy(m, "linear", {}, objective.names)}
        values.append(objective.value(scores, hib))
    best, span = max(values), max(values) - min(values)
    target = best - 0.01 * span
    print(f"grid: 66 mixtures, best mean exact match {best:.4f} (range {span:.4f}); target ≥ {target:.4f}")
    print(f"{'sampler':<8} {'evaluations to reach it (per seed)':<36} {'median':>7}  best after {trials} (median)")
    for sampler in ("cmaes", "tpe", "random"):
        counts, bests = [], []
        for seed in range(seeds):
            s = Search(engine, ["mean"], sampler=sampler, seed=seed, allow_test=True)  # in-memory study
            result = s.run(trials)
            vals = [t["values"][0] for t in result.trials if t["values"]]
            counts.append(first_reach(vals, target))
            bests.append(max(vals))
        shown = ", ".join("—" if c is None else str(c) for c in counts)
        med = statistics.median([c if c is not None else trials + 1 for c in counts])
        gap = (best - statistics.median(bests)) / span
        print(
            f"{sampler:<8} {shown:<36} {med if med <= trials else f'>{trials}':>7}  "
            f"{statistics.median(bests):.4f} ({gap:.1%} of the range below the grid's best)"
        )


def recycle_part(seeds: int, trials: int, device: str) -> None:
    lab = load_lab(LABS_DIR / "demo-recycle")
    engine = Engine(lab, Store(":memory:"), device=device)
    print(f"\nrecycle: {len(engine.names)} checkpoints, objective mean on search_data, {trials} full evaluations")
    best = {}
    for sampler in ("cmaes", "random", "tpe"):
        best[sampler] = []
        for seed in range(seeds):
            s = Search(engine, ["mean"], sampler=sampler, seed=seed)
            best[sampler].append(s.run(trials).best[0]["dev"][0])
        print(
            f"  {sampler:<7} best dev objective per seed: {', '.join(f'{v:.4f}' for v in best[sampler])}; "
            f"median {statistics.median(best[sampler]):.4f}"
        )
    spent = []
    for seed in range(seeds):
        goal = best["tpe"][seed]
        storage = f"sqlite:///{tempfile.mkdtemp()}/fidelity.sqlite"  # the study grows across the runs below
        s = Search(engine, ["mean"], sampler="tpe", seed=seed, fidelity=0.25, storage=storage)
        cost, reached = 0.0, None
        while cost < 3 * trials and reached is None:
            before = s.cost
            result = s.run(5)
            cost = s.cost
            if result.best[0]["dev"][0] >= goal:
                reached = cost
            if cost == before:
                break
        spent.append(reached)
    shown = ", ".join("—" if c is None else f"{c:.1f}" for c in spent)
    print(f"  tpe with fidelity 0.25: full evaluations to reach plain TPE's best at {trials}: {shown}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--part", default="grid,recycle")
    args = ap.parse_args()
    parts = args.part.split(",")
    if "grid" in parts:
        grid_part(args.seeds, args.trials, args.device)
    if "recycle" in parts:
        recycle_part(args.seeds, args.trials, args.device)


if __name__ == "__main__":
    main()
