"""Stored studies and what researchers read off them: the studies list, notes, and optuna's own analysis
(importance, hypervolume) on the mixture weights."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import mixlab.store
from mixlab.errors import StudyError
from mixlab.search.objective import Objective
from mixlab.search.study import DESCRIPTION
from mixlab.store import sqlite_trouble

NOTE = "note"  # a study's user attribute: the researcher's free-text note


def study_file(engine) -> Path | None:
    """The lab's search.sqlite (None for an in-memory cache: its studies are not kept)."""
    return None if str(engine.store.path) == ":memory:" else engine.store.beside("search.sqlite")


_STORAGES: dict[tuple[str, int], object] = {}
_STORAGES_LOCK = threading.Lock()


def _storage(path: Path):
    """One optuna storage per study file in this process: building one checks the file's schema (~0.1 s), which
    a page polling a running search paid on every read, taking that time from the search. Keyed by the file's
    inode too, so a file removed and made anew gets a storage of its own."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = Path(path).resolve()
    key = (str(path), path.stat().st_ino if path.exists() else 0)
    with _STORAGES_LOCK:
        if key not in _STORAGES:
            _STORAGES[key] = optuna.storages.RDBStorage(
                f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": mixlab.store.BUSY_SECONDS}}
            )
        return _STORAGES[key]


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
