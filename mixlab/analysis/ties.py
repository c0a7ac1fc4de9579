"""Ties up to float noise, ranks and regret: the one rule by which every pick chooses."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mixlab.errors import MixlabError

TIE_RTOL = 1e-9  # scores closer than this (relative to max(1, |score|)) are the same score: float noise


def same_score(a: float, b: float) -> bool:
    """Whether two scores are equal up to float noise: a mean of 0.5 and 0.7 and one of 0.6 and 0.6 differ
    in the last bit (1.1e-16), and ranking on that bit would call a tie a miss."""
    return abs(a - b) <= TIE_RTOL * max(1.0, abs(a), abs(b))


def snap_ties(values: Sequence[float]) -> np.ndarray:
    """``values`` with every run of scores equal up to float noise (:func:`same_score` between sorted
    neighbours) replaced by the run's smallest value, so exact comparisons, ranks and correlations see
    a tie as a tie. Values further apart than noise are unchanged."""
    v = np.asarray(values, dtype=float)
    out = v.copy()
    order = np.argsort(v, kind="stable")
    for prev, cur in zip(order[:-1], order[1:]):
        if same_score(v[prev], v[cur]):
            out[cur] = out[prev]  # the run's smallest value, carried along the run
    return out


def best_index(values: Sequence[float], higher_is_better: bool = True) -> int:
    """Index of the first of the best ``values``, scores equal up to float noise tied (:func:`snap_ties`):
    the one rule by which a pick, a search's winner, a best single checkpoint and a greedy soup's step
    choose, so none of them is decided by summation order."""
    v = snap_ties(values)
    if len(v) == 0:
        raise MixlabError("nothing to choose from: no scores")
    return int(np.argmax(v if higher_is_better else -v))


def at_least(a: float, b: float) -> bool:
    """``a ≥ b`` where scores equal up to float noise (:func:`same_score`) count as equal."""
    return a >= b or same_score(a, b)


def exact_mean(values: Sequence[float]) -> float:
    """The mean of ``values`` summed exactly (``math.fsum``): the same number whatever their order, so two
    models with the same scores in another order have the same mean to the last bit."""
    values = list(values)
    return math.fsum(values) / len(values)


def tie_ranks(values: Sequence[float], higher_is_better: bool = True) -> np.ndarray:
    """Competition ranks (1 = best; tied scores share the best rank of their group, the next rank skips)
    after :func:`snap_ties`: [0.9, 0.9 + 1e-16, 0.5] ranks [1, 1, 3]."""
    v = snap_ties(values) * (1.0 if higher_is_better else -1.0)
    return np.array([1 + int(np.sum(v > x)) for x in v], dtype=int)


def rank_label(rank: int, tied: int, n: int | None = None) -> str:
    """How a rank reads everywhere (pages, CLI, bench): "#1 (tied) of 21", "#3 of 21"."""
    return f"#{rank}" + (" (tied)" if tied else "") + (f" of {n}" if n is not None else "")


@dataclass(frozen=True)
class Regret:
    chosen: int  # index of the proxy's favourite
    true_rank: int  # its rank under the true scores, 1 = best; mixtures tied with it share the rank
    regret: float  # best true score − the chosen mixture's true score, in the metric's units (≥ 0; 0 when tied)
    n: int
    tied: int = 0  # how many other mixtures have the chosen one's true score (up to float noise)

    def label(self) -> str:
        return rank_label(self.true_rank, self.tied, self.n)


def regret(proxy: Sequence[float], true: Sequence[float], higher_is_better: bool = True) -> Regret:
    """The proxy's favourite (the first of any proxies tied for best), its competition rank under the true
    scores and the true score it gives up; true scores equal up to float noise tie (:func:`snap_ties`)."""
    x, y = np.asarray(proxy, dtype=float), snap_ties(true)
    if len(x) == 0:
        raise MixlabError("regret needs at least one mixture with both proxy and true scores")
    sign = 1.0 if higher_is_better else -1.0
    chosen = best_index(x, higher_is_better)
    true_rank = 1 + int(np.sum(sign * y > sign * y[chosen]))
    tied = int(np.sum(y == y[chosen])) - 1
    return Regret(chosen, true_rank, float(np.max(sign * y) - sign * y[chosen]), len(x), tied)
