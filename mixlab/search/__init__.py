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

The package, by concept: :mod:`~mixlab.search.space` (the box and its map onto the simplex),
:mod:`~mixlab.search.objective` (objectives and their standard errors), :mod:`~mixlab.search.study` (one search:
:class:`Search`), :mod:`~mixlab.search.stored` (stored studies, notes, importance, hypervolume). Everything is
importable from ``mixlab.search`` as before.
"""

from mixlab.search.objective import PROPORTION_METRICS, Objective, first_best_trial, standard_error
from mixlab.search.space import (
    EPS,
    GRID_M,
    SPACES,
    ZERO_BAND,
    box_bounds,
    box_point,
    start_params,
    suggest_weights,
    to_sparse_weights,
    to_weights,
)
from mixlab.search.stored import (
    NOTE,
    hypervolume_history,
    reference_point,
    set_note,
    studies,
    study_file,
    study_note,
    study_trials,
    weight_importance,
    weights_study,
)
from mixlab.search.study import (
    DESCRIPTION,
    NEW_TRIAL_SECONDS,
    OWNER,
    SAMPLERS,
    Search,
    SearchResult,
    check_budget,
    create_study,
    make_sampler,
)

__all__ = [
    "DESCRIPTION",
    "EPS",
    "GRID_M",
    "NEW_TRIAL_SECONDS",
    "NOTE",
    "OWNER",
    "PROPORTION_METRICS",
    "SAMPLERS",
    "SPACES",
    "ZERO_BAND",
    "Objective",
    "Search",
    "SearchResult",
    "box_bounds",
    "box_point",
    "check_budget",
    "create_study",
    "first_best_trial",
    "hypervolume_history",
    "make_sampler",
    "reference_point",
    "set_note",
    "standard_error",
    "start_params",
    "studies",
    "study_file",
    "study_note",
    "study_trials",
    "suggest_weights",
    "to_sparse_weights",
    "to_weights",
    "weight_importance",
    "weights_study",
]
