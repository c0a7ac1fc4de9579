"""Checkpoint recycling: which merge of the checkpoints you already have is best, against the baselines.

The lab's experts are the pool (any checkpoints of one base). Four candidates are chosen on the search
data (each benchmark's ``search_data``) and reported on the test data (``data``):

- **best single** checkpoint by the dev objective;
- **uniform** average of every checkpoint;
- **greedy soup**: checkpoints in order of their dev objective, each kept if the uniform average with it
  scores at least as well on dev (Wortsman et al.'s recipe);
- **searched**: the merge weights :class:`~mixlab.search.Search` finds (CMA-ES by default, as in the
  recycling paper and mergekit-evolve).

The searched row records the search (sampler, seed, trials) and every point it evaluated, in order.
What a seed guarantees: on the same machine, the same study; on another CPU, the same sampler and seed
but possibly another trajectory (floating-point differences steer CMA-ES elsewhere after a few trials).
So a recorded table is re-derived with ``replay=`` its points: the same candidates on any machine, every
score read from the cache the table was built with (:func:`recorded_points`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from mixlab.errors import MixlabError
from mixlab.search import Search
from mixlab.simplex import Mixture

RECORD = "recycle.json"  # a recycling lab's table, with its search's settings and points


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
    replay: Sequence[dict[str, float]] | None = None,
) -> list[dict]:
    """One row per candidate: name, weights, dev objective, test scores per benchmark, test objective; the
    searched row adds ``search`` (its settings and the points it evaluated). With ``replay``, the searched
    candidate is the best of those recorded points instead of a new search."""
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
    result = search.replay(replay, progress=progress) if replay is not None else search.run(trials, progress=progress)
    found = result.best[0]["weights"]
    record = {
        "objective": objective,
        "method": search.method,
        "params": search.params,
        "sampler": sampler,
        "seed": seed,
        "trials": len(replay) if replay is not None else trials,
        "points": [r["weights"] for r in result.trials if r["state"] == "complete"],
    }
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
    rows[-1]["search"] = record
    return rows


def recorded_points(
    lab, *, objective: str, method: str, params: dict, sampler: str, trials: int, seed: int
) -> list[dict] | None:
    """The points the lab's ``recycle.json`` recorded, when its search had these settings; else None."""
    if not (lab.root / RECORD).is_file():
        return None
    file = lab.resolve(RECORD, RECORD, want_file=True)
    try:
        rows = json.loads(file.read_text())
        rec = [r for r in rows if "search" in r][-1]["search"]
    except (OSError, ValueError, TypeError, KeyError, IndexError) as e:
        raise MixlabError(f"{file}: not a recycle table with a recorded search ({type(e).__name__}: {e})") from None
    wanted = dict(objective=objective, method=method, params=params, sampler=sampler, trials=trials, seed=seed)
    if any(rec.get(k) != v for k, v in wanted.items()):
        return None
    points = rec.get("points")
    if not isinstance(points, list) or not points or not all(isinstance(p, dict) for p in points):
        raise MixlabError(f"{file}: search.points must be a non-empty list of {{expert: weight}} objects")
    return points
