"""Scoring a model on one benchmark: the evaluator chosen (built-in, image questions, plugin, lm-eval), its
work items prepared once and checked against the model's context, and :class:`EvalResult`; or many variants
of one model (mixtures) in one stream of batches (:func:`run_benchmark_grouped`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mixlab.errors import EvaluationError
from mixlab.evaluate.batches import Batches, FiniteLogits, Progress
from mixlab.evaluate.builtin import BUILTIN, aggregate
from mixlab.evaluate.data import has_images
from mixlab.evaluate.images import image_answers
from mixlab.evaluate.plugins import run_plugin
from mixlab.lab import BenchmarkSpec
from mixlab.lazy import no_grad, torch
from mixlab.manifest import LM_EVAL


@dataclass(frozen=True)
class EvalResult:
    score: float
    metric: str
    higher_is_better: bool
    n: int
    seconds: float


def context_length(model) -> int | None:
    """The longest sequence the model's positions cover, when its config says."""
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return n if isinstance(n, int) and n > 0 else None


def prepare(tokenizer, spec: BenchmarkSpec, examples: list[dict], max_len: int | None = None) -> list[dict] | None:
    """A built-in benchmark's tokenised work items (None for plugins), to pass to :func:`run_benchmark`
    and :func:`run_benchmark_grouped` when one benchmark scores many models.

    Refused with an error naming the example: a completion (or choice) that tokenises to nothing (its
    loss would be a perfect 0.0), and, given ``max_len``, a sequence longer than the model's context."""
    if spec.evaluator not in BUILTIN or has_images(examples):  # image rows go through the processor whole
        return None
    items = BUILTIN[spec.evaluator].items(tokenizer, examples, spec)
    for it in items:
        where = f"benchmark {spec.name!r}, example {it['j'] + 1}"
        if "pair" in it:
            ctx, cont = it["pair"]
            if not cont:
                what = "a choice" if spec.evaluator == "choice" else "the completion"
                raise EvaluationError(f"{where}: {what} is empty (zero tokens), so there is nothing to score")
            length = len(ctx) + len(cont)
        else:
            length = len(it["ids"]) + spec.max_new_tokens
        if max_len is not None and length > max_len:
            raise EvaluationError(
                f"{where}: {length} tokens (prompt + completion or max_new_tokens) exceed the model's context of "
                f"{max_len}; shorten the example or lower max_new_tokens"
            )
    return items


@no_grad
def run_benchmark(
    model,
    tokenizer,
    spec: BenchmarkSpec,
    examples: list[dict],
    device: torch.device,
    *,
    batch_size: int = 32,
    progress: Progress | None = None,
    cancel=None,
    items: list[dict] | None = None,
    plugin_dirs: Sequence[Path] = (),
    harness: dict | None = None,
    processor=None,
) -> EvalResult:
    """Score ``model`` on one benchmark. ``cancel`` (a threading.Event) stops between batches; ``items``:
    the benchmark's work items from :func:`prepare`, when the caller keeps them; ``harness``: for
    ``lm_eval`` benchmarks, the lab's files (``data``, ``include``, ``cache``: see :mod:`mixlab.harness`);
    ``processor``: for exact_match rows with an ``image``, the base's processor."""
    start = time.perf_counter()
    n = len(examples)
    if spec.evaluator == LM_EVAL:
        from mixlab import harness as lm_eval_harness

        if harness is None:
            raise EvaluationError(f"benchmark {spec.name!r}: lm_eval needs the lab's files (run it through the engine)")
        with FiniteLogits(model):
            score, metric, n = lm_eval_harness.run(spec, model, tokenizer, device, batch_size, **harness)
    elif spec.evaluator == "exact_match" and has_images(examples):
        if processor is None:
            raise EvaluationError(
                f"benchmark {spec.name!r} has images: the base needs a processor (a vision-language model)"
            )
        metric = "accuracy"
        outs = image_answers(model, processor, examples, spec, device, Batches(batch_size, progress, cancel))
        score = aggregate("exact_match", [o.strip() == str(ex["answer"]).strip() for o, ex in zip(outs, examples)])
    elif spec.evaluator in BUILTIN:
        ev = BUILTIN[spec.evaluator]
        metric = ev.metric
        items = prepare(tokenizer, spec, examples, context_length(model)) if items is None else items
        values = ev.score(model, tokenizer, items, examples, device, Batches(batch_size, progress, cancel), spec)
        score = aggregate(spec.evaluator, values)
    else:
        score, metric = run_plugin(spec, model, tokenizer, examples, device, plugin_dirs)
    if not math.isfinite(score):
        raise EvaluationError(f"benchmark {spec.name!r}: evaluator {spec.evaluator!r} gave a non-finite score {score}")
    return EvalResult(float(score), metric, spec.higher_is_better, n, time.perf_counter() - start)


@no_grad
def run_benchmark_grouped(
    model,
    tokenizer,
    spec: BenchmarkSpec,
    examples: list[dict],
    device: torch.device,
    n_groups: int,
    set_group: Callable[[torch.Tensor], None],
    *,
    batch_size: int = 32,
    progress: Progress | None = None,
    cancel=None,
    items: list[dict] | None = None,
) -> list[EvalResult]:
    """Score ``n_groups`` variants of a model (e.g. mixtures) on the same examples in one stream of
    batches: every example is repeated per group, and ``set_group(group_index_per_row)`` is called
    before each batch. Built-in evaluators only."""
    if spec.evaluator not in BUILTIN:
        raise EvaluationError(
            f"evaluator {spec.evaluator!r} cannot score many mixtures in one batch; use the materialised path"
        )
    start = time.perf_counter()
    ev = BUILTIN[spec.evaluator]
    metric, hib = ev.metric, spec.higher_is_better
    items = prepare(tokenizer, spec, examples, context_length(model)) if items is None else items
    n = len(examples)
    # group g owns examples g*N … (g+1)*N−1
    repeated = [ex for _ in range(n_groups) for ex in examples]
    grouped = [{**it, "j": g * n + it["j"]} for g in range(n_groups) for it in items]

    def before(batch):
        set_group(torch.tensor([it["j"] // n for it in batch], device=device))

    batches = Batches(batch_size, progress, cancel, before)
    values = ev.score(model, tokenizer, grouped, repeated, device, batches, spec)
    seconds = (time.perf_counter() - start) / n_groups
    out = []
    for g in range(n_groups):
        score = aggregate(spec.evaluator, values[g * n : (g + 1) * n])
        if not math.isfinite(score):
            raise EvaluationError(f"benchmark {spec.name!r} gave a non-finite score {score}")
        out.append(EvalResult(float(score), metric, hib, n, seconds))
    return out
