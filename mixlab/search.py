"""Search the simplex for the mixture whose merged proxy scores best, through optuna.

Every candidate is scored by the :class:`~mixlab.engine.Engine`, so search, sweeps and the dashboard
share one cache, and a study lives in the lab's ``.mixlab/search.sqlite`` (optuna's storage): running a
search again with the same name resumes it, and a repeated point costs nothing (its score is cached).

**Parametrisation.** Samplers see a box: one parameter ``u_i ∈ [EPS, 1]`` per expert, mapped to the
simplex by ``w_i = −log u_i / Σ_j −log u_j``. Uniform ``u`` gives the uniform distribution on the
simplex (Dirichlet(1)), so the random sampler is an unbiased draw, and every point of the simplex's
interior is reachable by a unique direction in the box; ``EPS`` keeps each weight finite. (A softmax of
free logits has the same reach but needs an arbitrary box width; stick-breaking with uniform sticks
favours the first experts.) The grid sampler takes the lattice points themselves.

**Sparse merges** (``space="sparse"``). In the box above a weight is zero only on the box's face
``u_i = 1``, which a sampler almost never lands on: a search cannot settle on "checkpoints 3 and 7 only".
The sparse box widens each coordinate to ``[EPS, 1 + ZERO_BAND]`` and reads ``u_i ≥ 1`` as weight zero
(a spike-and-slab prior): a uniform draw still covers the simplex — each weight is zero with probability
``ZERO_BAND / (1 + ZERO_BAND)``, and given which are not, the others are Dirichlet(1) on that face — while
a whole slab of the box now maps onto each face, so an optimiser can concentrate the weight on a few
experts and stay there. (Every ``u_i ≥ 1``: the uniform mixture, as in the dense box.)

**Starting points.** ``Search.run(start=[...])`` evaluates the given mixtures first (optuna's
``enqueue_trial``, at the box point :func:`box_point` maps onto each), and CMA-ES starts its search
distribution there (``x0``): recycling starts from the greedy soup and the best single checkpoint.

**Dev and test.** A search optimises on each benchmark's ``search_data`` (its dev file) and never on
``data``; the winners are then scored on ``data`` (test), and those are the numbers to report. A lab
whose benchmarks have no ``search_data`` can be searched only with ``allow_test=True``, said in the result.

**One study, one search.** A study records what it searches (the lab, the models' fingerprint, the
objectives, method, sampler, seed, fidelity, split); a name given again with anything else changed, an
expert retrained say, is refused rather than resumed with the old models' scores. A trial a killed process
left running is marked failed when the study is resumed (a trial records the process that runs it).

**Multi-fidelity.** With ``fidelity=f`` a candidate is first scored on the first ``f`` of its dev
examples; optuna's successive-halving pruner stops the unpromising ones there, so a budget of N full
evaluations explores more than N points (single objective only: optuna does not prune multi-objective
studies).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import mixlab.store
from mixlab.analysis import MEAN, best_index
from mixlab.errors import MixlabError, StudyError
from mixlab.lab import BenchmarkSpec
from mixlab.owner import Owner
from mixlab.run.executors import LocalBackend
from mixlab.scoring.request import ProxyRequest, split_benchmark
from mixlab.simplex import Mixture, check_seed, lattice, validate_weights
from mixlab.store import sqlite_trouble

EPS = 1e-6
SPACES = ("simplex", "sparse")  # the dense box (Dirichlet(1)) and the spike-and-slab box (module docstring)
ZERO_BAND = 1 / 3  # the sparse box's slab u_i ∈ [1, 1 + ZERO_BAND] that means w_i = 0: P(w_i = 0) = 1/4
GRID_M = 8  # the grid sampler's lattice: steps of 1/8 (45 points for K=3)
SAMPLERS = ("random", "grid", "cmaes", "tpe", "gp", "nsga2")
DESCRIPTION = "mixlab"  # the study's user attribute that records what it searches
OWNER = "owner"  # a trial's user attribute: the process that runs it (mixlab.owner)
NEW_TRIAL_SECONDS = 60  # a running trial without an owner this young may be another process's, just begun


@dataclass(frozen=True)
class Objective:
    """A weighted sum of benchmark scores, signed so that higher is better (a loss counts negatively)."""

    weights: tuple[tuple[str, float], ...]

    @classmethod
    def parse(cls, text: str, benchmarks: Sequence[BenchmarkSpec]) -> Objective:
        """``mean`` (the higher-is-better benchmarks, equally), a benchmark name, or ``a=0.5,b=0.5``."""
        names = [b.name for b in benchmarks]
        if text == MEAN:
            up = [b.name for b in benchmarks if b.higher_is_better]
            if not up:
                raise MixlabError("objective 'mean' needs a higher-is-better benchmark; this lab has none")
            return cls(tuple((n, 1.0 / len(up)) for n in up))
        parts = []
        for item in text.split(","):
            name, _, w = item.partition("=")
            name = name.strip()
            if name not in names:
                raise MixlabError(f"objective {text!r}: no benchmark {name!r}; benchmarks: {', '.join(names)}")
            try:
                weight = float(w) if w else 1.0
            except ValueError:
                raise MixlabError(f"objective {text!r}: weight {w!r} of {name!r} is not a number") from None
            if not math.isfinite(weight) or weight <= 0:
                raise MixlabError(f"objective {text!r}: weight of {name!r} must be positive, got {w}")
            parts.append((name, weight))
        return cls(tuple(parts))

    @classmethod
    def from_label(cls, label: str) -> Objective:
        """The objective a study recorded by its :meth:`label` (``add=0.333333,rev=0.333333``)."""
        return cls(tuple((n, float(w)) for n, _, w in (part.partition("=") for part in label.split(","))))

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.weights]

    def label(self) -> str:
        """The objective as a study records it (``add=0.333333,rev=0.333333``): part of a study's identity."""
        return ",".join(f"{n}={w:g}" for n, w in self.weights)

    def describe(self) -> str:
        """The objective as a reader names it: ``mean of add, rev, sort``, ``rev``, or the weighted sum."""
        if len(self.weights) == 1:
            return self.weights[0][0]
        if len({w for _, w in self.weights}) == 1:
            return "mean of " + ", ".join(self.names)
        return " + ".join(f"{w:g}·{n}" for n, w in self.weights)

    def value(self, scores: dict[str, float], higher_is_better: dict[str, bool]) -> float:
        """Σ w·score (a loss negated), summed exactly (``math.fsum``): the order of the benchmarks never
        changes the value, so equal scores in another order give the same objective."""
        return math.fsum(w * (scores[n] if higher_is_better[n] else -scores[n]) for n, w in self.weights)


def first_best_trial(study):
    """A one-objective study's best trial: the first (lowest number) of the finished trials whose value
    equals the best up to float noise (:func:`mixlab.analysis.best_index`). optuna's ``best_trial`` takes
    the first strictly largest, so a tie in the last bit would be won by whichever sum rounded up."""
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return study.best_trial  # optuna's own error: no finished trial
    done = sorted(done, key=lambda t: t.number)
    return done[best_index([t.value for t in done], study.direction == StudyDirection.MAXIMIZE)]


def to_weights(u: Sequence[float]) -> list[float]:
    """A point of the box ``[EPS, 1]^K`` as mixture weights (see the module docstring)."""
    e = -np.log(np.clip(np.asarray(u, dtype=float), EPS, 1.0))
    if e.sum() <= 0:  # every u_i = 1: the centre
        return [1.0 / len(e)] * len(e)
    return [float(x) for x in e / e.sum()]


def to_sparse_weights(u: Sequence[float]) -> list[float]:
    """A point of the sparse box ``[EPS, 1 + ZERO_BAND]^K`` as mixture weights: ``u_i ≥ 1`` is weight zero, the
    rest as :func:`to_weights` (see the module docstring)."""
    return to_weights(np.minimum(np.asarray(u, dtype=float), 1.0))


def box_bounds(space: str) -> tuple[float, float]:
    """The range of each box coordinate ``u_i`` in ``space``."""
    if space not in SPACES:
        raise MixlabError(f"search space must be one of {', '.join(SPACES)}, got {space!r}")
    return (EPS, 1.0) if space == "simplex" else (EPS, 1.0 + ZERO_BAND)


def box_point(weights: Sequence[float], space: str = "simplex") -> list[float]:
    """A box point that ``space``'s map sends to ``weights`` (a starting point for a sampler): ``u_i =
    exp(−c·w_i)`` with ``c = min(K, −log EPS)`` (an average weight 1/K sits at u = 1/e, mid-box in log scale);
    a zero weight is ``u_i = 1`` in the dense box (its face) and the middle of the zero slab in the sparse one."""
    box_bounds(space)
    w = np.asarray(validate_weights(weights, normalize=True), dtype=float)
    c = min(len(w), -math.log(EPS))
    u = np.exp(-c * w)
    if space == "sparse":
        u = np.where(w == 0, 1.0 + ZERO_BAND / 2, u)
    return [float(x) for x in u]


def check_budget(budget) -> float | None:
    """A search's budget in full dev evaluations: None (no budget) or a positive finite number."""
    if budget is not None and (isinstance(budget, bool) or not math.isfinite(budget) or budget <= 0):
        raise MixlabError(f"budget must be a positive number of full dev evaluations, like 10, got {budget!r}")
    return budget


def make_sampler(name: str, seed: int, k: int, x0: dict[str, float] | None = None):
    """The named optuna sampler; ``x0`` (box coordinates ``u0..``) is where CMA-ES centres its first
    generation (the other samplers start from the points enqueued in the study instead)."""
    import warnings

    import optuna

    check_seed(seed)

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "cmaes":
        with warnings.catch_warnings():  # x0 is deprecated in optuna 4.9 (to go in 6.0) with no replacement yet
            warnings.simplefilter("ignore", FutureWarning)
            return optuna.samplers.CmaEsSampler(seed=seed, x0=x0)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler({"point": list(range(len(lattice(k, GRID_M))))}, seed=seed)
    raise MixlabError(f"sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")


def create_study(
    k: int,
    n_objectives: int,
    sampler: str,
    seed: int = 0,
    *,
    name: str | None = None,
    storage: str | Path | None = None,
    fidelity: bool = False,
    x0: dict[str, float] | None = None,
):
    """An optuna study over K-expert mixtures, every objective maximised (resumed when ``name`` exists in
    ``storage``). With ``fidelity``: one successive-halving rung — a trial reports its subset score at step
    1 and goes on to the full data only if it is in the top third of the trials scored there so far.
    ``x0``: CMA-ES's starting point (see :func:`make_sampler`)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = None if storage is None else str(storage)
    if storage is not None and storage.startswith("sqlite:///"):
        # a locked file is waited on as the evaluation cache is, then reported busy (not forever)
        storage = optuna.storages.RDBStorage(
            storage, engine_kwargs={"connect_args": {"timeout": mixlab.store.BUSY_SECONDS}}
        )
    pruner = (
        optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
        if fidelity
        else optuna.pruners.NopPruner()
    )
    return optuna.create_study(
        study_name=name,
        storage=storage,
        load_if_exists=name is not None,
        directions=["maximize"] * n_objectives,
        sampler=make_sampler(sampler, seed, k, x0),
        pruner=pruner,
    )


def suggest_weights(trial, k: int, sampler: str, space: str = "simplex") -> list[float]:
    """A trial's mixture: a lattice point for the grid sampler, else the box point of ``space`` mapped onto the
    simplex (:func:`to_weights`, :func:`to_sparse_weights`)."""
    if sampler == "grid":
        points = lattice(k, GRID_M)
        return [float(x) for x in points[trial.suggest_categorical("point", list(range(len(points))))]]
    lo, hi = box_bounds(space)
    u = [trial.suggest_float(f"u{i}", lo, hi) for i in range(k)]
    return to_weights(u) if space == "simplex" else to_sparse_weights(u)


def start_params(weights: Sequence[float], sampler: str, space: str = "simplex") -> dict:
    """The parameters of the trial that evaluates ``weights`` first: its box point, or for the grid sampler
    the nearest lattice point (L1)."""
    if sampler == "grid":
        points = np.asarray(lattice(len(weights), GRID_M), dtype=float)
        w = np.asarray(validate_weights(weights, normalize=True))
        return {"point": int(np.abs(points - w).sum(axis=1).argmin())}
    return {f"u{i}": u for i, u in enumerate(box_point(weights, space))}


@dataclass
class SearchResult:
    study: str
    objectives: list[Objective]
    split: str  # "dev" (search_data) or "test" (allow_test: searched on the reported data)
    best: list[dict]  # per winner: weights, dev values, test scores ({benchmark: score})
    trials: list[dict] = field(default_factory=list)  # every finished trial: weights, values, state
    full_evaluations: float = 0.0  # cost in full dev evaluations (a subset costs its fraction)
    baselines: list[dict] = field(default_factory=list)  # filled by Search.baselines (the dashboard's job)


class Search:
    """One optuna study over one lab's mixtures (see the module docstring)."""

    def __init__(
        self,
        engine,
        objectives: Sequence[str],
        *,
        method: str | None = None,
        params: dict | None = None,
        sampler: str = "tpe",
        seed: int = 0,
        fidelity: float | None = None,
        allow_test: bool = False,
        name: str | None = None,
        storage: str | Path | None = None,
        backend=None,
        space: str = "simplex",
    ):
        if not 1 <= len(objectives) <= 3:
            raise MixlabError(f"search takes 1 objective, or 2-3 for a Pareto front; got {len(objectives)}")
        if fidelity is not None and not 0 < fidelity < 1:
            raise MixlabError(f"fidelity must be a fraction in (0, 1), like 0.25; got {fidelity}")
        if fidelity is not None and len(objectives) > 1:
            raise MixlabError("multi-fidelity pruning needs one objective (optuna does not prune multi-objective)")
        self.engine = engine
        self.backend = backend or LocalBackend()  # a RayBackend runs one trial per worker at a time
        self.request_method = engine.method(method, params)  # resolved once: every trial's request carries it
        self.method, self.params = self.request_method.pair()
        specs = engine.lab.benchmarks
        self.objectives = [Objective.parse(o, specs) for o in objectives]
        self.sampler, self.seed, self.fidelity = sampler, seed, fidelity
        make_sampler(sampler, seed, len(engine.names))  # a bad name fails here, before any work
        box_bounds(space)  # and a bad space
        self.space = space
        self._x0: dict[str, float] | None = None  # CMA-ES's starting point, set by run(start=...)
        used = sorted({n for o in self.objectives for n in o.names})
        missing = [n for n in used if engine.lab.benchmark(n).search_data is None]
        if missing and not allow_test:
            raise MixlabError(
                f"benchmark(s) {', '.join(missing)} have no search_data: a search would optimise on the data it "
                "reports. Add search_data = 'data/<name>_dev.jsonl' (a dev split) to each in lab.toml, or pass "
                "--allow-test to search on the reported data anyway (the result says so)."
            )
        self.split = "test" if missing else "dev"
        self.used = used
        self.hib = {n: engine.lab.benchmark(n).higher_is_better for n in used}
        self.dev = {n: split_benchmark(engine.lab, engine.lab.benchmark(n), "dev") for n in used}
        self._n_dev = {n: len(engine._bench(s).examples) for n, s in self.dev.items()}
        desc = {
            "lab": engine.lab.name,
            "models": engine.models_fp,
            "objectives": [o.label() for o in self.objectives],
            "method": self.method,
            "params": self.params,
            "sampler": sampler,
            "seed": seed,
            "fidelity": fidelity,
            "split": self.split,
        }
        if space != "simplex":  # recorded only when not the default: older studies' descriptions stay valid
            desc["space"] = space
        digest = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:10]
        self.desc = json.loads(json.dumps(desc, sort_keys=True))  # as the study stores it (JSON)
        self.default_name = f"{'-'.join(objectives)}-{sampler}-{digest}"
        self.name = name or self.default_name
        if storage is None and str(engine.store.path) != ":memory:":
            storage = f"sqlite:///{engine.store.beside('search.sqlite')}"  # inside the lab, as the cache is
        self.storage = storage  # None: in memory (an in-memory cache has no folder to keep a study in)
        self.cost = 0.0
        self._cost_lock = threading.Lock()

    def request(self, mixture: Mixture, limit: int | None = None) -> ProxyRequest:
        """A trial's request: ``mixture`` on the objectives' benchmarks, ``split="dev"`` (each benchmark's
        search_data; its own data, named apart, with allow_test), the first ``limit`` examples when given."""
        return ProxyRequest((mixture,), self.request_method, tuple(self.used), "dev", limit, "materialize")

    @property
    def file(self) -> Path | None:
        """The SQLite file the study lives in (None: in memory, or a storage that is not a SQLite file)."""
        url = str(self.storage) if self.storage is not None else ""
        return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None

    def _study(self):
        """The study, created or resumed: refused where the name holds another search; the trials a killed
        process left running are marked failed."""
        path = self.file
        if path is not None and path.is_dir():
            raise StudyError(f"search study file {path} is a folder, not a file: move it aside (or remove it)")
        if path is not None and path.exists() and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
            raise StudyError(
                f"search study file {path} is read-only (or its folder is): a search writes its trials there; "
                "make both writable, or point MIXLAB_CACHE at a writable folder (the study is kept beside the cache)"
            )
        study = create_study(
            len(self.engine.names),
            len(self.objectives),
            self.sampler,
            self.seed,
            name=self.name,
            storage=self.storage,
            fidelity=bool(self.fidelity),
            x0=self._x0,
        )
        self._check_same_search(study)
        self._fail_orphans(study)
        return study

    def _check_same_search(self, study) -> None:
        where = f"study {self.name!r}" + (f" in {self.file}" if self.file else "")
        fix = (
            "A study holds one search: choose another name with --study (or leave it out: the default name is "
            "derived from the settings, and a new one starts), or move the study file aside."
        )
        stored = study.user_attrs.get(DESCRIPTION)
        if len(study.directions) != len(self.objectives):
            raise StudyError(
                f"{where} has {len(study.directions)} objective(s), this search has {len(self.objectives)}. {fix}"
            )
        if stored is None:
            if study.trials and self.name != self.default_name:
                raise StudyError(
                    f"{where} does not record what it searched (an older mixlab made it), so its trials may be of "
                    f"other models or settings. {fix}"
                )
            study.set_user_attr(DESCRIPTION, self.desc)  # a default name is the digest of this description
            return
        changed = [k for k in sorted(set(stored) | set(self.desc)) if stored.get(k) != self.desc.get(k)]
        if changed:
            said = "; ".join(f"{k}: {stored.get(k)!r} then, {self.desc.get(k)!r} now" for k in changed)
            why = (
                " (the base or an expert changed: its trials' scores are of the old models)"
                if "models" in changed
                else ""
            )
            raise StudyError(f"{where} was run with other settings: {said}{why}. {fix}")

    def _fail_orphans(self, study) -> None:
        """Mark failed the trials left running by a process that is gone (killed mid-trial)."""
        import optuna
        from optuna.trial import TrialState

        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            try:
                if Owner(**t.user_attrs[OWNER]).alive():
                    continue
            except (KeyError, TypeError):  # no owner (yet: a trial just asked for), or not one we can read
                age = (datetime.datetime.now() - t.datetime_start).total_seconds() if t.datetime_start else math.inf
                if age < NEW_TRIAL_SECONDS:
                    continue
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)

    @contextlib.contextmanager
    def _storage_errors(self):
        """The study file's SQLite errors as StudyErrors that say which file and what to do."""
        import sqlite3

        import sqlalchemy.exc

        try:
            yield
        except (sqlalchemy.exc.DatabaseError, sqlite3.DatabaseError) as e:
            raise StudyError(f"search study file {self.file or self.storage}: {sqlite_trouble(e, 'study')}") from None

    def stored_points(self) -> list[dict[str, float]]:
        """The mixtures of the stored study's complete trials, in trial order ([] before its first)."""
        from optuna.trial import TrialState

        with self._storage_errors():
            study = self._study()
            trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return [dict(zip(self.engine.names, t.user_attrs["weights"])) for t in trials if "weights" in t.user_attrs]

    def finished_trials(self) -> int:
        """How many trials of the stored study ended (complete or pruned): what a trial budget counts."""
        from optuna.trial import TrialState

        with self._storage_errors():
            return len(self._study().get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))

    def _weights(self, trial) -> list[float]:
        return suggest_weights(trial, len(self.engine.names), self.sampler, self.space)

    def dev_values(self, mixture: Mixture, limit: int | None = None, cancel=None) -> list[float]:
        """The objectives at ``mixture`` on the search data (its first ``limit`` examples when given)."""
        evals = self.backend.score(self.engine, self.request(mixture, limit), cancel=cancel)
        scores = {n: e.score for n, e in zip(self.used, evals)}
        with self._cost_lock:  # trials run on several threads with a Ray backend
            for n in self.used:
                full = self._n_dev[n]
                self.cost += (min(limit, full) if limit else full) / full / len(self.used)
        return [o.value(scores, self.hib) for o in self.objectives]

    def run(
        self,
        trials: int = 30,
        *,
        budget: float | None = None,
        progress: Callable[[int, int, str], None] | None = None,
        cancel=None,
        start: Sequence[dict[str, float]] = (),
    ) -> SearchResult:
        """Run ``trials`` more trials (or until ``budget`` full dev evaluations are spent), then score the
        winner(s) on the reported data. ``start``: mixtures ({expert: weight}, missing experts 0) a new study
        evaluates first (they count among the trials), the first of them CMA-ES's starting point; a resumed
        study has its own history and ignores them."""
        check_budget(budget)
        points = [self._start_weights(p, i) for i, p in enumerate(start)]
        if points and self.sampler == "cmaes":
            self._x0 = start_params(points[0], self.sampler, self.space)
        with self._storage_errors():
            return self._run(trials, budget, progress, cancel, points)

    def _start_weights(self, point: dict[str, float], i: int) -> list[float]:
        names = self.engine.names
        unknown = sorted(set(point) - set(names))
        if unknown:
            raise MixlabError(f"starting point {i} names unknown expert(s) {', '.join(unknown)}; experts: {names}")
        return validate_weights([point.get(n, 0.0) for n in names], normalize=True)

    def _run(self, trials, budget, progress, cancel, start=()) -> SearchResult:
        import optuna

        study = self._study()
        if not study.trials:
            for w in start:
                study.enqueue_trial(start_params(w, self.sampler, self.space), skip_if_exists=True)
        k = len(self.engine.names)
        done = [0]
        owner = asdict(Owner.here())

        def objective(trial):
            trial.set_user_attr(OWNER, owner)  # a process that finds this trial running after we are gone fails it
            w = self._weights(trial)
            mixture = Mixture.of(self.engine.names, w, normalize=True)
            trial.set_user_attr("weights", mixture.weights)
            if self.fidelity:
                n_low = max(1, int(min(self._n_dev.values()) * self.fidelity))
                (low,) = self.dev_values(mixture, n_low, cancel=cancel)
                trial.report(low, step=1)
                if trial.should_prune():
                    raise optuna.TrialPruned()
            values = self.dev_values(mixture, None, cancel=cancel)
            return values[0] if len(values) == 1 else values

        def after(study_, trial) -> None:
            done[0] += 1
            if progress:
                progress(done[0], trials, f"trial {trial.number}: {trial.state.name.lower()}")
            if budget is not None and self.cost >= budget:
                study_.stop()

        study.optimize(objective, n_trials=trials, callbacks=[after], catch=(), n_jobs=self.backend.workers)
        winners = study.best_trials if len(self.objectives) > 1 else [first_best_trial(study)]
        best = [
            self._winner(Mixture.of(self.engine.names, t.user_attrs["weights"], normalize=True), t.values, cancel)
            for t in winners
        ]
        rows = [
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "weights": dict(zip(self.engine.names, t.user_attrs.get("weights", [float("nan")] * k))),
                "values": list(t.values) if t.values else None,
            }
            for t in study.trials
        ]
        return SearchResult(self.name, self.objectives, self.split, best, rows, round(self.cost, 3))

    def replay(
        self,
        points: Sequence[dict[str, float]],
        *,
        progress: Callable[[int, int, str], None] | None = None,
        cancel=None,
    ) -> SearchResult:
        """Score recorded points (a finished search's trials, in trial order) on the search data instead of
        sampling anew, and report the best. A sampler with the same seed can take another trajectory on
        another CPU (floating-point differences), so a shipped search result is re-derived by replaying its
        points: the same winner on any machine, every score read from the cache where it was stored."""
        if len(self.objectives) != 1:
            raise MixlabError(f"replay takes a one-objective search; this one has {len(self.objectives)}")
        if not points:
            raise MixlabError("replay needs at least one recorded point")
        names = self.engine.names
        rows = []
        for i, point in enumerate(points):
            unknown = sorted(set(point) - set(names))
            if unknown:
                raise MixlabError(f"recorded point {i} names unknown expert(s) {', '.join(unknown)}; experts: {names}")
            # as recorded, not renormalised: a point written to 6 decimals keys the cache as it did when stored
            mixture = Mixture.of(names, [point.get(n, 0.0) for n in names])
            rows.append(
                {
                    "number": i,
                    "state": "complete",
                    "weights": dict(point),
                    "values": self.dev_values(mixture, cancel=cancel),
                }
            )
            if progress:
                progress(i + 1, len(points), f"point {i}: replayed")
        best = rows[best_index([r["values"][0] for r in rows])]  # the first of values equal up to float noise
        mixture = Mixture.of(names, [best["weights"].get(n, 0.0) for n in names])
        return SearchResult(
            self.name,
            self.objectives,
            self.split,
            [self._winner(mixture, best["values"], cancel)],
            rows,
            round(self.cost, 3),
        )

    def baselines(self, winner: dict[str, float], cancel=None) -> list[dict]:
        """What a winner is to be read against, each with its test scores (and their ``n`` and metrics):
        the uniform mixture; the best expert, chosen on dev (the merge at its vertex); the best mixture whose
        proxy scores are cached for every benchmark of the objectives (chosen on test, so an upper bound of
        the grid, said in its name); and the trained (true) mixture nearest to the winner (L1), its true
        scores where cached."""
        from mixlab.analysis import nearest

        eng, names = self.engine, self.engine.names
        test = [eng.lab.benchmark(n) for n in self.used]
        rows = []

        def row(candidate: str, weights: Sequence[float], evals: Sequence) -> None:
            """``evals``: Evaluations, or rows of the results table (benchmark, score, n, metric)."""
            scores = {e.benchmark: e.score for e in evals}
            if set(scores) != set(self.used):
                return  # not every benchmark of the objectives is scored (a true mixture not yet scored)
            rows.append(
                {
                    "candidate": candidate,
                    "weights": dict(zip(names, [float(x) for x in weights])),
                    "test": scores,
                    "n": {e.benchmark: int(e.n) for e in evals},
                    "metric": {e.benchmark: e.metric for e in evals},
                    "test_objective": [o.value(scores, self.hib) for o in self.objectives],
                }
            )

        def proxy(w: Sequence[float]):
            return eng.proxy(Mixture.of(names, list(w), normalize=True), self.request_method, None, test, cancel=cancel)

        uniform = [1.0 / len(names)] * len(names)
        row("uniform", uniform, proxy(uniform))
        vertices = [[float(i == j) for j in range(len(names))] for i in range(len(names))]
        dev = [self.dev_values(Mixture.of(names, v), cancel=cancel)[0] for v in vertices]
        best = best_index(dev)
        row(f"best expert ({names[best]}, chosen on dev)", vertices[best], proxy(vertices[best]))

        cached = eng.results(self.request_method)
        cached = cached[(cached.kind == "proxy") & cached.benchmark.isin(self.used)]
        if len(cached):
            wide = cached.pivot_table(index=list(names), columns="benchmark", values="score", aggfunc="first")
            wide = wide.dropna(subset=self.used) if set(self.used) <= set(wide.columns) else wide.iloc[:0]
            if len(wide):
                objective = [self.objectives[0].value(dict(r), self.hib) for _, r in wide[self.used].iterrows()]
                top = wide.index[best_index(objective)]
                row(f"best of {len(wide)} cached mixtures (chosen on test: an upper bound)", top, proxy(top))

        trues = eng.lab.manifest.true_mixtures
        if trues:
            ws = np.array([eng.lab.true_mixture_weights(t).weights for t in trues])
            i, _ = nearest([winner[n] for n in names], ws)
            label = eng.lab.true_mixture_name(trues[i])
            true = eng.results()
            true = true[(true.kind == "true") & (true.label == label) & true.benchmark.isin(self.used)]
            row(f"nearest trained mixture ({label}, true scores)", ws[i], list(true.itertuples()))
        return rows

    def _winner(self, mixture: Mixture, dev: Sequence[float], cancel=None) -> dict:
        """A winner's row: its weights, dev values, and its scores on the reported (test) data."""
        test = [self.engine.lab.benchmark(n) for n in self.used]
        evals = self.engine.proxy(mixture, self.request_method, None, test, cancel=cancel)
        scores = {e.benchmark: e.score for e in evals}
        return {
            "weights": mixture.as_dict(),
            "dev": list(dev),
            "test": scores,
            "n": {e.benchmark: e.n for e in evals},
            "metric": {e.benchmark: e.metric for e in evals},
            "test_objective": [o.value(scores, self.hib) for o in self.objectives],
        }


PROPORTION_METRICS = ("accuracy",)  # per-example 0/1 scores: a binomial standard error applies


def standard_error(row: dict, objective: Objective) -> float | None:
    """The binomial standard error of a test objective Σ_b c_b·p_b from a row's scores (``test``), example
    counts (``n``) and metrics: √(Σ_b c_b²·p_b(1−p_b)/n_b). None when a benchmark in it is not a per-example
    accuracy (a loss: its spread is not known from its mean and n)."""
    total = 0.0
    for b, c in objective.weights:
        if row.get("metric", {}).get(b) not in PROPORTION_METRICS or not row.get("n", {}).get(b):
            return None
        p = row["test"][b]
        total += c * c * p * (1 - p) / row["n"][b]
    return math.sqrt(total)


# --- stored studies and what researchers read off them (optuna's own analysis, on the weights) ---------------

NOTE = "note"  # a study's user attribute: the researcher's free-text note


def study_file(engine) -> Path | None:
    """The lab's search.sqlite (None for an in-memory cache: its studies are not kept)."""
    return None if str(engine.store.path) == ":memory:" else engine.store.beside("search.sqlite")


def _storage(path: Path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.storages.RDBStorage(
        f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": mixlab.store.BUSY_SECONDS}}
    )


def studies(path: Path | None, engine=None) -> list[dict]:
    """The studies a search.sqlite holds: name, sampler, objectives, split, finished trials, best (the first
    objective's best dev value, single-objective studies), note; [] when there is no file yet. With
    ``engine``, only the studies of its lab and models (a cache set by $MIXLAB_CACHE holds every lab's)."""
    import optuna
    import sqlalchemy.exc

    if path is None or not Path(path).is_file():
        return []
    try:
        summaries = optuna.get_all_study_summaries(_storage(path), include_best_trial=True)
    except sqlalchemy.exc.DatabaseError as e:
        raise StudyError(f"search study file {path}: {sqlite_trouble(e, 'study')}") from None
    out = []
    for s in summaries:
        desc = s.user_attrs.get(DESCRIPTION) or {}
        if engine is not None and (desc.get("lab"), desc.get("models")) != (engine.lab.name, engine.models_fp):
            continue
        best = s.best_trial.values[0] if s.best_trial is not None and len(s.directions) == 1 else None
        out.append(
            {
                "study": s.study_name,
                "sampler": desc.get("sampler", "?"),
                "objectives": " and ".join(Objective.from_label(o).describe() for o in desc.get("objectives", []))
                or "?",
                "split": desc.get("split", "?"),
                "trials": s.n_trials,
                "best": best,
                "note": s.user_attrs.get(NOTE, ""),
            }
        )
    return out


def study_trials(path: Path, name: str, names: Sequence[str]) -> list[dict]:
    """A stored study's trials as :class:`SearchResult` rows (number, state, weights, values), in order."""
    import optuna

    study = optuna.load_study(study_name=name, storage=_storage(path))
    k = len(names)
    return [
        {
            "number": t.number,
            "state": t.state.name.lower(),
            "weights": dict(zip(names, t.user_attrs.get("weights", [float("nan")] * k))),
            "values": list(t.values) if t.values else None,
        }
        for t in study.get_trials(deepcopy=False)
    ]


def set_note(path: Path, name: str, text: str) -> None:
    """Keep a free-text note with a stored study (optuna's user attributes)."""
    import optuna

    optuna.load_study(study_name=name, storage=_storage(path)).set_user_attr(NOTE, str(text))


def study_note(path: Path, name: str) -> str:
    import optuna

    return optuna.load_study(study_name=name, storage=_storage(path)).user_attrs.get(NOTE, "")


def weights_study(trials: Sequence[dict], names: Sequence[str], n_objectives: int = 1):
    """The complete trials as an in-memory optuna study whose parameters are the mixture weights themselves
    (not the sampler's box coordinates ``u_i``), so optuna's importance evaluators and figures speak of
    weights: "how much does the weight of rev matter"."""
    import optuna
    from optuna.distributions import FloatDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize"] * n_objectives)
    dist = {n: FloatDistribution(0.0, 1.0) for n in names}
    study.add_trials(
        [
            optuna.trial.create_trial(
                params={n: float(t["weights"][n]) for n in names}, distributions=dist, values=t["values"]
            )
            for t in trials
            if t["state"] == "complete"
            and t["values"]
            and all(math.isfinite(t["weights"].get(n, math.nan)) for n in names)
        ]
    )
    return study


def weight_importance(trials: Sequence[dict], names: Sequence[str], seed: int = 0) -> dict[str, float]:
    """How much each expert's weight explains the (first) objective across the trials: optuna's fANOVA
    (a random forest's functional ANOVA) on the weights, normalised to sum to 1, largest first. {} with fewer
    than 3 complete trials (nothing to explain)."""
    import optuna

    study = weights_study(trials, names)
    if len(study.trials) < 3:
        return {}
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    return dict(optuna.importance.get_param_importances(study, evaluator=evaluator, target=target))


def reference_point(values: np.ndarray) -> np.ndarray:
    """A hypervolume's reference point for maximised objectives: a tenth of the range below the worst value
    of each objective (so every trial's point counts)."""
    lo, hi = values.min(axis=0), values.max(axis=0)
    return lo - 0.1 * np.where(hi > lo, hi - lo, 1.0)


def hypervolume_history(values: Sequence[Sequence[float]], reference: Sequence[float]) -> list[float]:
    """After each trial, the hypervolume (area for 2 objectives) that the trials so far dominate above
    ``reference`` (every objective maximised): optuna's WFG hypervolume, on losses."""
    from optuna._hypervolume import compute_hypervolume

    ref = -np.asarray(reference, dtype=float)
    losses = -np.asarray(values, dtype=float)
    out = []
    for i in range(1, len(losses) + 1):
        pts = losses[:i][(losses[:i] < ref).all(axis=1)]
        out.append(float(compute_hypervolume(pts, ref)) if len(pts) else 0.0)
    return out
