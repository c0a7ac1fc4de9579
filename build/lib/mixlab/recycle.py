"""Checkpoint recycling: which merge of the checkpoints you already have is best, against the baselines.

The lab's experts are the pool (any checkpoints of one base). Four candidates are chosen on the search
data (each benchmark's ``search_data``) and reported on the test data (``data``):

- **best single** checkpoint by the dev objective;
- **uniform** average of every checkpoint;
- **greedy soup**: checkpoints in order of their dev objective, each kept if the uniform average with it
  scores at least as well on dev (Wortsman et al.'s recipe);
- **searched**: the merge weights :class:`~mixlab.search.Search` finds (CMA-ES by default, as in the
  recycling paper and mergekit-evolve).
"""

from __future__ import annotations

from collections.abc import Callable

from mixlab.search import Search
from mixlab.simplex import Mixture


def recycle(
    engine,
    objective: str = "mean",
    *,
    method: str = "linear",
    params: dict | None = None,
    sampler: str = "cmaes",
    trials: int = 40,
    seed: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[dict]:
    """One row per candidate: name, weights, dev objective, test scores per benchmark, test objective."""
    search = Search(engine, [objective], method=method, params=params, sampler=sampler, seed=seed)
    names = engine.names
    test = [engine.lab.benchmark(n) for n in search.used]

    def mixture(weights: dict[str, float]) -> Mixture:
        return Mixture.of(names, [weights.get(n, 0.0) for n in names], normalize=True)

    def dev(weights: dict[str, float]) -> float:
        return search.dev_values(mixture(weights))[0]

    def soup(members: list[str]) -> dict[str, float]:
        return {n: 1.0 / len(members) for n in members}

    singles = sorted(((dev({n: 1.0}), n) for n in names), reverse=True)  # best first
    best_single = {singles[0][1]: 1.0}
    greedy = [singles[0][1]]
    score = singles[0][0]
    for _, n in singles[1:]:
        trial = dev(soup([*greedy, n]))
        if trial >= score:
            greedy, score = [*greedy, n], trial
    found = search.run(trials, progress=progress).best[0]["weights"]
    candidates = {
        "best single checkpoint": best_single,
        "uniform average": soup(names),
        "greedy soup": soup(greedy),
        f"searched ({sampler})": found,
    }
    rows = []
    for label, weights in candidates.items():
        m = mixture(weights)
        scores = {e.benchmark: e.score for e in engine.proxy(m, search.method, search.params, test)}
        rows.append(
            {
                "candidate": label,
                "weights": {n: w for n, w in m.as_dict().items() if w > 0},
                "dev_objective": dev(m.as_dict()),
                "test": scores,
                "test_objective": search.objectives[0].value(scores, search.hib),
            }
        )
    return rows
