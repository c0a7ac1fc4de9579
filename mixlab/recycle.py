"""Checkpoint recycling: which merge of the checkpoints you already have is best, against the baselines.

The lab's experts are the pool (any checkpoints of one base). Four candidates are chosen on the search
data (each benchmark's ``search_data``) and reported on the test data (``data``):

- **best single** checkpoint by the dev objective;
- **uniform** average of every checkpoint;
- **greedy soup**: checkpoints in order of their dev objective, each kept if the uniform average with it
  scores at least as well on dev (Wortsman et al.'s recipe);
- **searched**: the merge weights :class:`~mixlab.search.Search` finds (CMA-ES by default, as in the
  recycling paper and mergekit-evolve). With ``start=True`` the search first evaluates the greedy soup and
  the best single checkpoint (CMA-ES centred on the soup); with ``space="sparse"`` it searches the
  spike-and-slab box, where a merge of a few checkpoints is a region, not a face (see :mod:`mixlab.search`).
  With ``layer_groups=N`` (> 1) it searches a weight per checkpoint in each of N layer groups
  (:mod:`mixlab.merge.groups`; LoRA-Soups / mergekit-evolve style): the searched merge is then no point of
  the simplex, and its row names each checkpoint's weight per group (its ``weights``: their mean).

The searched row records the search (sampler, seed, trials) and every point it evaluated, in order.
What a seed guarantees: on the same machine, the same study; on another CPU, the same sampler and seed
but possibly another trajectory (floating-point differences steer CMA-ES elsewhere after a few trials).
So a recorded table is re-derived with ``replay=`` its points: the same candidates on any machine, every
score read from the cache the table was built with (:func:`recorded_points`).

**Asked again.** :func:`compare` (what the dashboard runs) never grows a stored study silently: it replays
``recycle.json``'s points when its settings match, else runs a study named for its settings (trials
included); asked again with the same settings, it reads that study's trials back (every score cached), and
finishes one an interruption left short. It says which of these it did (:attr:`Recycled.origin`).

**Noise.** Every candidate is scored on the same test examples, so each difference is paired: the table
records, from the candidates' per-example values (:mod:`mixlab.values`), every candidate's test objective
minus the best single checkpoint's (``vs_best_single``) and the searched merge's minus every other
candidate's (the searched row's ``vs``), each with its paired bootstrap 95% interval
(:func:`mixlab.analysis.paired_difference`, the objective's weights per benchmark; with the exact McNemar p
for a one-benchmark accuracy). :func:`verdicts` reads them: "better" or "worse" when the interval excludes 0,
else "within noise". Where a candidate's scores have no per-example values (a cache older than them) the
difference has no interval and the verdict says the noise is unknown.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mixlab.analysis import at_least, best_index, pairable, paired_difference
from mixlab.errors import MixlabError
from mixlab.search import Objective, Search
from mixlab.simplex import Mixture

RECORD = "recycle.json"  # a recycling lab's table, with its search's settings and points
DEFAULTS = {
    "space": "simplex",
    "start": False,
    "layer_groups": 1,
}  # settings a record names only when it differs from these


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
    study: str | None = None,
    cancel=None,
    space: str = "simplex",
    start: bool = False,
    layer_groups: int = 1,
) -> list[dict]:
    """One row per candidate: name, weights, dev objective, test scores per benchmark (and their example
    counts ``n`` and metrics), test objective; the searched row adds ``search`` (its settings and the points
    it evaluated). With ``replay``, the searched candidate is the best of those recorded points instead of a
    new search; ``study`` names the optuna study a search runs in (default: named by its settings).
    ``layer_groups`` > 1: the search gives each checkpoint a weight per layer group (:mod:`mixlab.merge.groups`);
    its row adds ``layer_groups`` (the groups' names and each checkpoint's weight in each)."""
    search = Search(
        engine,
        [objective],
        method=method,
        params=params,
        sampler=sampler,
        seed=seed,
        name=study,
        space=space,
        layer_groups=layer_groups,
    )
    names = engine.names
    test = [engine.lab.benchmark(n) for n in search.used]

    def mixture(weights: dict[str, float]) -> Mixture:
        return Mixture.of(names, [weights.get(n, 0.0) for n in names], normalize=True)

    def dev(weights: dict[str, float]) -> float:
        return search.dev_values(mixture(weights), cancel=cancel)[0]

    def soup(members: list[str]) -> dict[str, float]:
        return {n: 1.0 / len(members) for n in members}

    values = [dev({n: 1.0}) for n in names]
    order = []  # best first; values equal up to float noise keep the lab's order of checkpoints
    while len(order) < len(names):
        rest = [i for i in range(len(names)) if i not in order]
        order.append(rest[best_index([values[i] for i in rest])])
    singles = [(values[i], names[i]) for i in order]
    best_single = {singles[0][1]: 1.0}
    greedy = [singles[0][1]]
    score = singles[0][0]
    for _, n in singles[1:]:
        trial = dev(soup([*greedy, n]))
        if at_least(trial, score):
            greedy, score = [*greedy, n], trial
    if replay is not None:
        result = search.replay(replay, progress=progress, cancel=cancel)
    else:
        starts = [soup(greedy), best_single] if start else []
        result = search.run(trials, progress=progress, cancel=cancel, start=starts)
    found = search._mixture(result.best[0].get("groups") or result.best[0]["weights"])
    record = {
        "objective": objective,
        "method": search.method,
        "params": search.params,
        "sampler": sampler,
        "seed": seed,
        "trials": len(replay) if replay is not None else trials,
        "points": [r.get("groups") or r["weights"] for r in result.trials if r["state"] == "complete"],
    }
    settings = (("space", space), ("start", start), ("layer_groups", layer_groups))
    record |= {k: v for k, v in settings if v != DEFAULTS[k]}  # older records stay equal
    candidates = {
        "best single checkpoint": mixture(best_single),
        "uniform average": mixture(soup(names)),
        "greedy soup": mixture(soup(greedy)),
        f"searched ({sampler})": found,
    }
    rows, values = [], []
    for label, m in candidates.items():
        evals = engine.proxy(m, search.request_method, None, test, cancel=cancel)
        scores = {e.benchmark: e.score for e in evals}
        kept = engine.store.values([e.key for e in evals])
        values.append({e.benchmark: kept.get(e.key) for e in evals})
        rows.append(
            {
                "candidate": label,
                "weights": {n: w for n, w in m.as_dict().items() if w > 0},
                # a plain mixture's dev score as it was always keyed: from its rounded weights
                "dev_objective": dev(m.as_dict()) if m.groups is None else search.dev_values(m, cancel=cancel)[0],
                "test": scores,
                "n": {e.benchmark: e.n for e in evals},
                "metric": {e.benchmark: e.metric for e in evals},
                "test_objective": search.objectives[0].value(scores, search.hib),
            }
            | ({"layer_groups": {"groups": search.group_names, "weights": m.group_dict()}} if m.groups else {})
        )
    rows[-1]["search"] = record
    goal = search.objectives[0]
    coefficients = {n: c if search.hib[n] else -c for n, c in goal.weights}  # Σ c·score, a loss negated
    for i in range(1, len(rows)):
        rows[i]["vs_best_single"] = objective_difference(values[i], values[0], coefficients)
    rows[-1]["vs"] = {
        r["candidate"]: objective_difference(values[-1], values[i], coefficients) for i, r in enumerate(rows[:-1])
    }
    return rows


def objective_difference(a: dict, b: dict, coefficients: dict[str, float]) -> dict:
    """Candidate a's test objective Σ c_b·score_b minus b's, from their per-example values per benchmark
    (``{benchmark: ExampleValues or None}``), with its paired bootstrap 95% interval
    (:func:`mixlab.analysis.paired_difference`): ``difference``, ``low``, ``high``, ``n`` (shared examples),
    ``p`` (the exact McNemar p of a one-benchmark accuracy, else None). Without values on both sides:
    ``low`` and ``high`` None (the noise is unknown)."""
    names = list(coefficients)
    va, vb = tuple(a.get(n) for n in names), tuple(b.get(n) for n in names)
    if None in va or None in vb or not pairable(va, vb):
        return {"difference": None, "low": None, "high": None, "n": None, "p": None}
    d = paired_difference(va, vb, coefficients=[coefficients[n] for n in names])
    return {"difference": d.difference, "low": d.low, "high": d.high, "n": d.n, "p": d.p_value}


def recorded_points(
    lab,
    *,
    objective: str,
    method: str,
    params: dict,
    sampler: str,
    trials: int,
    seed: int,
    space: str = "simplex",
    start: bool = False,
    layer_groups: int = 1,
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
    wanted |= {"space": space, "start": start, "layer_groups": layer_groups}
    if any(rec.get(k, DEFAULTS.get(k)) != v for k, v in wanted.items()):
        return None
    points = rec.get("points")
    if not isinstance(points, list) or not points or not all(isinstance(p, dict) for p in points):
        raise MixlabError(f"{file}: search.points must be a non-empty list of {{expert: weight}} objects")
    return points


@dataclass(frozen=True)
class Recycled:
    """What :func:`compare` did: the candidates' rows, how the searched one was found, and how many scores
    the lab's cache gained meanwhile."""

    rows: list[dict]
    origin: str  # "replayed recycle.json's 40 points", "new study …", "read back study …", "resumed study …"
    study: str | None  # the optuna study the search ran in (None: replayed from recycle.json)
    new_scores: int

    @property
    def summary(self) -> str:
        return f"{self.origin}; {self.new_scores} new score{'s' * (self.new_scores != 1)} in the cache"


def study_name(trials: int, default_name: str, start: bool = False) -> str:
    """The study a recycling search runs in: named by its settings (the search's own default name, which is
    a digest of the models, objective, method, sampler, seed and space), its number of trials, and whether it
    started from the soup and the best single checkpoint."""
    return f"recycle-{trials}t{'-start' * start}-{default_name}"


def compare(
    engine,
    objective: str = "mean",
    *,
    sampler: str = "cmaes",
    trials: int = 40,
    seed: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
    cancel=None,
    space: str = "simplex",
    start: bool = False,
    layer_groups: int = 1,
) -> Recycled:
    """:func:`recycle` as the dashboard asks for it, never silently growing a stored study (see the module
    docstring): recycle.json's points when its settings match; else the study named by the settings — run
    fresh, finished if an interruption left it short, read back if it is complete."""
    before = engine.store.count()
    points = recorded_points(
        engine.lab,
        objective=objective,
        method="linear",
        params={},
        sampler=sampler,
        trials=trials,
        seed=seed,
        space=space,
        start=start,
        layer_groups=layer_groups,
    )
    name, remaining = None, trials
    if points is not None:
        origin = f"replayed the {len(points)} points recorded in {RECORD} (the same settings)"
    else:
        search = Search(engine, [objective], sampler=sampler, seed=seed, space=space, layer_groups=layer_groups)
        name = study_name(trials, search.default_name, start)
        search.name = name
        stored = search.stored_points()
        if len(stored) >= trials:
            points = stored[:trials]
            origin = f"read back study {name}: its {trials} trials had these settings (no new search)"
        elif stored:
            remaining = trials - len(stored)
            origin = f"resumed study {name}: {len(stored)} trials were done, {remaining} more run"
        else:
            origin = f"new study {name} ({trials} trials)"
    rows = recycle(
        engine,
        objective,
        sampler=sampler,
        trials=remaining,
        seed=seed,
        progress=progress,
        replay=points,
        study=name,
        cancel=cancel,
        space=space,
        start=start,  # a resumed study keeps its own history (Search.run)
        layer_groups=layer_groups,
    )
    rows[-1]["search"]["trials"] = trials
    return Recycled(rows, origin, name, engine.store.count() - before)


def verdicts(rows: Sequence[dict]) -> list[dict]:
    """The searched merge (the last row) against every other candidate on test, from the paired differences
    the table records (the searched row's ``vs``, see :func:`recycle`): difference, its 95% interval (low,
    high: None where unknown) and the verdict — "better" or "worse" when the interval excludes 0, else
    "within noise"; with no interval, by the sign of the difference, and ``noise_known`` False."""
    searched = rows[-1]
    paired = searched.get("vs", {})
    out = []
    for other in rows[:-1]:
        diff = searched["test_objective"] - other["test_objective"]
        pd_ = paired.get(other["candidate"]) or {}
        low, high = pd_.get("low"), pd_.get("high")
        known = low is not None and high is not None
        if known and low <= 0 <= high:
            verdict = "within noise"
        elif known:
            verdict = "better" if low > 0 else "worse"
        else:
            verdict = "better" if diff > 0 else "worse" if diff < 0 else "equal"
        out.append(
            {
                "candidate": other["candidate"],
                "searched": searched["test_objective"],
                "other": other["test_objective"],
                "difference": diff,
                "low": low,
                "high": high,
                "p": pd_.get("p"),
                "verdict": verdict,
                "noise_known": known,
            }
        )
    return out


def interval_text(d: dict | None) -> str:
    """A recorded paired difference (:func:`objective_difference`) as the table shows it: "+0.0117
    [-0.0067, +0.0300]"; its difference alone where the noise is unknown; "—" for none (the best single's own
    row)."""
    if not d or d.get("difference") is None:
        return "—"
    if d.get("low") is None:
        return f"{d['difference']:+.4f}"
    return f"{d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"


def verdict_text(v: dict, strong=str, name=str) -> str:
    """One of :func:`verdicts` in words, as the CLI and the page say it: "within noise of the greedy soup
    (0.5800 vs 0.5917, -0.0117; paired 95% CI [-0.0300, +0.0067])". ``strong`` marks the verdict (the page:
    bold) and ``name`` writes the candidate (the page: escaped for markdown)."""
    diff = f"{v['searched']:.4f} vs {v['other']:.4f}, {v['difference']:+.4f}"
    if v["noise_known"]:
        noise = f"paired 95% CI [{v['low']:+.4f}, {v['high']:+.4f}]"
        noise += f", McNemar p = {v['p']:.3g}" if v.get("p") is not None else ""
    else:
        noise = "noise unknown: no per-example values"
    relation = {"within noise": "of", "equal": "to"}.get(v["verdict"], "than")
    return f"{strong(v['verdict'])} {relation} the {name(v['candidate'])} ({diff}; {noise})"


def replay_command(root, search: dict) -> str:
    """The command that gives a recorded table again: ``search`` (a recycle.json searched row's record) as
    flags; the bare command would search anew with the defaults."""
    flags = [f"--trials {search['trials']}"] if "trials" in search else []
    flags += ["--space sparse"] if search.get("space") == "sparse" else []
    flags += ["--start"] if search.get("start") else []
    return " ".join(["python -m mixlab recycle", str(root), *flags])


def recorded_table(lab) -> list[dict] | None:
    """The candidates' rows the lab's ``recycle.json`` records (what opening a recycling lab shows), or None
    when it has none."""
    if not (lab.root / RECORD).is_file():
        return None
    file = lab.resolve(RECORD, RECORD, want_file=True)
    try:
        rows = json.loads(file.read_text())
        if not rows or not all(isinstance(r, dict) and {"candidate", "weights", "test"} <= set(r) for r in rows):
            raise ValueError("each row needs candidate, weights and test")
        rows[-1]["search"]["objective"]  # noqa: B018 - the searched row records its search
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise MixlabError(f"{file}: not a recycle table with a recorded search ({type(e).__name__}: {e})") from None
    return rows


def compare_objective(engine, rows: Sequence[dict]) -> Objective:
    """The objective a table of candidates was chosen by (its searched row records it)."""
    return Objective.parse(rows[-1]["search"]["objective"], engine.lab.benchmarks)
