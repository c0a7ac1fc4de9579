"""One search: optuna's study over a lab's mixtures (:class:`Search`), its samplers and result (see
:mod:`mixlab.search`)."""

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
from mixlab.analysis import best_index
from mixlab.errors import MixlabError, StudyError
from mixlab.owner import Owner
from mixlab.run.executors import LocalBackend
from mixlab.scoring.request import ProxyRequest, split_benchmark
from mixlab.search.objective import Objective, first_best_trial
from mixlab.search.space import GRID_M, box_bounds, start_params, suggest_weights
from mixlab.simplex import Mixture, check_seed, lattice, validate_weights
from mixlab.store import sqlite_trouble

SAMPLERS = ("random", "grid", "cmaes", "tpe", "gp", "nsga2")
DESCRIPTION = "mixlab"  # the study's user attribute that records what it searches
OWNER = "owner"  # a trial's user attribute: the process that runs it (mixlab.owner)
NEW_TRIAL_SECONDS = 60  # a running trial without an owner this young may be another process's, just begun


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
