"""Search objectives: a weighted sum of benchmark scores, its binomial standard error, and a study's first
best trial."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from mixlab.analysis import MEAN, best_index
from mixlab.errors import MixlabError
from mixlab.lab import BenchmarkSpec


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
