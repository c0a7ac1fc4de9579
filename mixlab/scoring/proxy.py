"""Proxy scores of a :class:`~mixlab.scoring.request.ProxyRequest`: the cache read once per score, then
what is missing scored on the path the cost rule (:func:`choose_path`) or the request picks — materialise
(merge each mixture into the resident model) or batched (LoRA experts, linear methods: the mixtures share
batches through :class:`~mixlab.batched.BatchedLora`, nothing is merged)."""

from __future__ import annotations

from collections.abc import Iterator

from mixlab.errors import EvaluationError
from mixlab.evaluate import BUILTIN, has_images, run_benchmark_grouped
from mixlab.keys import CacheKey
from mixlab.lab import BenchmarkSpec
from mixlab.lazy import torch
from mixlab.merge import MergeSpec
from mixlab.scoring.request import Method, ProxyRequest
from mixlab.scoring.targets import MergedModel
from mixlab.simplex import ROUND, Mixture
from mixlab.sources import BenchmarkData
from mixlab.store import Evaluation

# On a CPU, batching mixtures beats merging each one up to about this many examples (bench/grid.py at
# batch 512, batched vs per-mixture: generation 4.9× at 16, 1.6× at 64, 1.2× at 128, 1.0× at 200;
# scoring 1.6× at 16, 1.4× at 32, 0.95× at 64): greedy generation (many small passes) benefits longer.
SMALL_BENCHMARK = {"exact_match": 128, "lm_loss": 32, "choice": 32}
# the batched path's extra low-rank work (mixlab.batched.low_rank_share) under which it beats merging on a CPU
# for any benchmark size: it won at real shapes (Qwen2-0.5B 0.074, Qwen2-1.5B 0.042; bench/eval_scale.py) and
# lost at the demo model's (demo-k3 0.59; bench/grid.py); the README has both tables
THIN_LOW_RANK = 0.25


def row(mixture: Mixture, spec: MergeSpec) -> dict:
    """How a proxy score's row names what was scored. A merge with per-layer-group weights adds its groups to
    the row's params (``layer_groups``): the lab's tables of a method's merges leave it out (its ``weights`` are
    only its groups' mean)."""
    params = spec.params
    if mixture.groups is not None:
        params = {**params, "layer_groups": [[round(w, ROUND) for w in g] for g in mixture.groups]}
    return {
        "kind": "proxy",
        "label": mixture.label(),
        "method": spec.method,
        "params": params,
        "weights": mixture.as_dict(),
    }


def choose_path(engine, method: Method, bench: BenchmarkSpec, n_mixtures: int) -> str:
    """The cost rule. The batched LoRA path pays off where each mixture's own batches would be small
    (small benchmarks), on a GPU, and wherever its extra low-rank work is thin against the layers it adapts
    (:data:`THIN_LOW_RANK`: real model shapes). On a CPU with thick factors against thin layers (the demo
    model), once a benchmark fills its own batches, that work costs more than the in-memory merge it saves
    (bench/grid.py and bench/eval_scale.py; the README has the tables)."""
    if n_mixtures < 2 or bench.evaluator not in BUILTIN or not method.linear:
        return "materialize"
    examples = engine._bench(bench).examples
    if has_images(examples):  # image rows are generated through the processor, one merge at a time
        return "materialize"
    from mixlab.batched import low_rank_share, supports_batched  # defines nn.Module subclasses: imports torch

    if supports_batched(engine.experts) is not None:
        return "materialize"
    if engine.device.type != "cpu" or len(examples) <= SMALL_BENCHMARK[bench.evaluator]:
        return "batched"
    return "batched" if low_rank_share(engine.experts) <= THIN_LOW_RANK else "materialize"


def lookup(engine, request: ProxyRequest) -> list[Evaluation] | None:
    """The cached scores of the request's (one) mixture on its benchmarks, or None: computes nothing."""
    (mixture,) = request.mixtures
    spec = request.method.spec(mixture, engine.excluded)
    keys = [engine._merge_key(spec, engine._bench(b)).digest for b in request.specs(engine.lab)]
    hits = engine.store.get_many(keys)
    return [hits[k] for k in keys] if len(hits) == len(keys) else None


def score(engine, request: ProxyRequest, *, refresh: bool = False, progress=None, cancel=None) -> list[Evaluation]:
    """Proxy scores for every (mixture, benchmark) of ``request``, in that order. Per benchmark the data
    is read once and the cache once (one query for every mixture; none with ``refresh``); each new score is
    stored as it finishes."""
    engine.refresh()
    mixtures = request.mixtures
    benchmarks = request.specs(engine.lab)
    specs = request.merges(engine.excluded)  # the method was resolved once, in the request
    rows = [row(m, sp) for m, sp in zip(mixtures, specs)]
    grouped = any(m.groups is not None for m in mixtures)
    if grouped and request.path == "batched":
        raise EvaluationError("a merge with per-layer-group weights is scored merged (path='materialize')")
    total, done = len(mixtures) * len(benchmarks), 0
    found: dict[tuple[int, str], Evaluation] = {}
    for b in benchmarks:
        data = engine._bench(b)
        keys = [engine._merge_key(sp, data) for sp in specs]
        hits = {} if refresh else engine.store.get_many([k.digest for k in keys])
        missing = [i for i, k in enumerate(keys) if k.digest not in hits]
        found.update(
            {(i, b.name): engine._as_here(hits[k.digest], rows[i]) for i, k in enumerate(keys) if k.digest in hits}
        )
        chosen = request.path if request.path != "auto" else choose_path(engine, request.method, b, len(missing))
        chosen = "materialize" if grouped else chosen  # the batched layers hold one weight per expert
        if chosen == "batched" and missing and has_images(data.examples):
            raise EvaluationError(f"benchmark {b.name!r} has images: the batched path is for text; use materialize")
        if chosen == "batched" and missing:
            todo = [(i, mixtures[i], specs[i], keys[i]) for i in missing]
            for i, ev in _batched(engine, b, data, request.method, todo, progress, cancel, done, total):
                found[(i, b.name)] = ev
                done += 1
        reloaded = False
        for i in missing if chosen != "batched" else []:
            key = keys[i]
            if engine.refresh():  # lab files changed mid-sweep: reloaded, and the scores left are keyed anew
                reloaded, specs, data = True, request.merges(engine.excluded), engine._bench(b)
            if reloaded:
                key = engine._merge_key(specs[i], data)
                hit = None if refresh else engine.store.get(key.digest)
                if hit is not None:
                    found[(i, b.name)] = engine._as_here(hit, rows[i])
                    done += 1
                    continue
            found[(i, b.name)] = engine._compute(
                MergedModel(specs[i]), b, data, key, rows[i], progress, cancel, done, total
            )
            done += 1
            if progress:
                progress(done, total, f"{rows[i]['label']} · {b.name}")
        done += len(mixtures) - len(missing)
        if progress:
            progress(done, total, f"{b.name} done")
    return [found[(i, b.name)] for i in range(len(mixtures)) for b in benchmarks]


def _batched(
    engine,
    b: BenchmarkSpec,
    bench: BenchmarkData,
    method: Method,
    todo: list[tuple[int, Mixture, MergeSpec, CacheKey]],
    progress,
    cancel,
    done: int,
    total: int,
) -> Iterator[tuple[int, Evaluation]]:
    """Yield (index, evaluation) for mixtures scored on the batched LoRA path, a chunk of mixtures at a
    time (about one batch of rows), each chunk stored as soon as it is scored. ``bench``: the data the
    ``todo`` keys were built from."""
    if not method.linear:
        raise EvaluationError(f"the batched path merges linearly; method {method.name!r} needs path='materialize'")
    from mixlab.batched import BatchedLora, supports_batched

    why = supports_batched(engine.experts)
    if why:
        raise EvaluationError(f"the batched path does not apply to this lab: {why}")
    kernel = method.kernel
    rows_per_mixture = max(1, len(engine._items(b, bench) or bench.examples))
    rows = engine.batch_size_for(b, bench)  # for this benchmark's rows: a chunk of mixtures shares each pass
    chunk = max(1, rows // rows_per_mixture)
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        coef = torch.tensor(
            [kernel.coefficients(sp.weights, sp.params) for _, _, sp, _ in part], dtype=torch.float32
        ).to(engine.device)  # (M, K): c = λ·w per mixture

        def step(d, n, _start=start, _m=len(part)):
            if progress:
                progress(done + _start + d * _m // max(n, 1), total, f"{b.name}: {d}/{n} rows (batched)")

        with engine._lock:
            engine.resident.load_base()
            with BatchedLora(engine.model, engine.experts, engine.device) as lora:
                results = run_benchmark_grouped(
                    engine.model,
                    engine.tokenizer,
                    b,
                    bench.examples,
                    engine.device,
                    len(part),
                    lambda g, _coef=coef: lora.state.set(_coef[g]),
                    batch_size=rows,
                    progress=step,
                    cancel=cancel,
                    items=engine._items(b, bench),
                )
        engine._check_unchanged(b, bench)
        evals = [
            engine._evaluation(key, b, r, f"{engine.device} (batched)", **row(m, sp))
            for (_, m, sp, key), r in zip(part, results)
        ]
        engine.store.put(evals)
        yield from ((i, ev) for (i, *_), ev in zip(part, evals))
