"""The output-space proxy: a mixture w scored by mixing the experts' next-token distributions,
p_w(y | x) = Σ_i w_i p_i(y | x), instead of merging their weights (MDE and MixMin report that it ranks
mixtures well).

For a loss benchmark every mixture is free after one pass per expert: the loss of p_w on a token y is
−log Σ_i w_i p_i(y), and only each expert's log-probability of the gold tokens is needed
(:func:`mixed_loss`). For exact match the answer is decoded greedily from p_w, all experts stepping
together, each with its own KV cache (:func:`mixed_greedy`). Tokenisation is the evaluators' own
(:func:`mixlab.evaluate.prepare`), so a one-hot w scores exactly like the expert (a test checks it).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch

from mixlab.errors import MixlabError

SUPPORTED = ("lm_loss", "exact_match")  # the evaluators an output-space proxy scores


def check_weights(weights: Sequence[float]) -> torch.Tensor:
    """Mixture weights as a float64 tensor: finite, ≥ 0, summing to 1 (to 1e-6)."""
    w = torch.as_tensor(list(weights), dtype=torch.float64)
    if w.ndim != 1 or len(w) == 0 or not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise MixlabError(f"output-space weights must be finite and ≥ 0, got {list(weights)}")
    if abs(float(w.sum()) - 1) > 1e-6:
        raise MixlabError(f"output-space weights must sum to 1, got {float(w.sum()):.9g}")
    return w


def mix_logprobs(logps: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """log Σ_i w_i p_i from the experts' log-probabilities ``logps`` (K, ...): logsumexp_i(log p_i + log w_i),
    in float64 (an expert with weight 0 drops out: log 0 = −inf)."""
    w = check_weights(weights)
    if logps.shape[0] != len(w):
        raise MixlabError(f"{logps.shape[0]} experts' log-probabilities but {len(w)} weights")
    logw = torch.log(w).to(logps.device).view(-1, *([1] * (logps.dim() - 1)))
    return torch.logsumexp(logps.double() + logw, dim=0)


@torch.no_grad()
def gold_logprobs(model, tokenizer, items: Sequence[dict], device, batch_size: int = 32) -> list[torch.Tensor]:
    """Each lm_loss work item's per-token log p(gold continuation | context) under ``model`` (one pass):
    a list of (T_j,) tensors. ``items``: :func:`mixlab.evaluate.prepare`'s for an lm_loss benchmark."""
    from mixlab.evaluate.builtin import continuation_logprobs
    from mixlab.evaluate.tokens import pad_id

    pad, out = pad_id(tokenizer), []
    for start in range(0, len(items), batch_size):
        out += continuation_logprobs(model, [it["pair"] for it in items[start : start + batch_size]], pad, device)
    return out


def mixed_loss(per_expert: Sequence[Sequence[torch.Tensor]], weights: Sequence[float]) -> float:
    """The lm_loss of the mixed distribution: −Σ_j Σ_t log Σ_i w_i p_i(y_jt) / Σ_j T_j, from each expert's
    :func:`gold_logprobs` (``per_expert[i][j]``: expert i, example j), summed like the evaluator (fsum)."""
    n = {len(e) for e in per_expert}
    if len(n) != 1:
        raise MixlabError(f"the experts' gold log-probabilities cover different numbers of examples: {sorted(n)}")
    nll, tokens = [], 0
    for j in range(n.pop()):
        mixed = mix_logprobs(torch.stack([e[j].double() for e in per_expert]), weights)  # (T_j,)
        nll.append(-float(mixed.sum()))
        tokens += len(mixed)
    return math.fsum(nll) / max(tokens, 1)


@torch.no_grad()
def mixed_greedy(
    models: Sequence,
    tokenizer,
    prompts: Sequence[list[int]],
    weights: Sequence[float],
    max_new_tokens: int,
    stop: Sequence[str],
    device,
) -> list[str]:
    """Greedy continuations of tokenised ``prompts`` decoded from p_w = Σ_i w_i p_i: at every step each expert
    (``models[i]``, its own KV cache) gives p_i(· | prefix), the next token is argmax_y Σ_i w_i p_i(y), and
    every expert is fed that token. Stops like the exact_match evaluator (a one-token stop string or EOS;
    the text cut at the first stop string)."""
    from mixlab.evaluate.builtin import greedy_decode

    w = check_weights(weights)
    if len(models) != len(w):
        raise MixlabError(f"{len(models)} experts but {len(w)} weights")
    live = [(m, float(x)) for m, x in zip(models, w) if x > 0]  # an expert with weight 0 changes nothing
    mix = [x for _, x in live] if len(live) > 1 else [1.0]

    def argmax_mixed(last: list[torch.Tensor]) -> torch.Tensor:
        logps = torch.stack([torch.log_softmax(x.double(), -1) for x in last])  # (K', B, V)
        return mix_logprobs(logps, mix).argmax(-1)  # (B,)

    return greedy_decode([m for m, _ in live], tokenizer, prompts, max_new_tokens, stop, device, argmax_mixed)


class OutputSpaceProxy:
    """The output-space proxy of one lab's experts. Each expert is loaded once (a copy of the resident
    model holding it, kept for exact-match decoding) and each loss benchmark read once per expert; then
    :meth:`score` gives any mixture's score. Scores are not cached in the evaluation cache (its keys are
    weight-space merges): a loss benchmark costs nothing per mixture, exact match one decode."""

    def __init__(self, engine, batch_size: int = 64):
        self.engine, self.batch_size = engine, batch_size
        self._models: list | None = None
        self._gold: dict[str, list[list[torch.Tensor]]] = {}

    @property
    def models(self) -> list:
        if self._models is None:
            res = self.engine.resident
            self._models = []
            for tv in self.engine.experts:
                res.load_checkpoint(tv)
                self._models.append(copy.deepcopy(res.model).eval())
            res.load_base()
        return self._models

    def _items(self, name: str):
        from mixlab.evaluate import prepare

        spec = self.engine.lab.benchmark(name)
        if spec.evaluator not in SUPPORTED:
            raise MixlabError(
                f"the output-space proxy scores {' and '.join(SUPPORTED)} benchmarks; {name!r} is {spec.evaluator}"
            )
        data = self.engine._bench(spec)
        return spec, prepare(self.engine.tokenizer, spec, data.examples), data.examples

    def score(self, weights: Sequence[float], benchmark: str) -> tuple[float, int]:
        """(score, n examples) of the mixture ``weights`` (one per expert, in the lab's order) on ``benchmark``."""
        spec, items, examples = self._items(benchmark)
        if spec.evaluator == "lm_loss":
            if benchmark not in self._gold:
                device = self.engine.resident.device
                self._gold[benchmark] = [
                    gold_logprobs(m, self.engine.tokenizer, items, device, self.batch_size) for m in self.models
                ]
            return mixed_loss(self._gold[benchmark], weights), len(examples)
        right = 0
        for start in range(0, len(items), self.batch_size):
            part = items[start : start + self.batch_size]
            outs = mixed_greedy(
                self.models,
                self.engine.tokenizer,
                [it["ids"] for it in part],
                weights,
                spec.max_new_tokens,
                spec.stop,
                self.engine.resident.device,
            )
            right += sum(o.strip() == str(examples[it["j"]]["answer"]).strip() for o, it in zip(outs, part))
        return right / len(items), len(items)


def output_space_results(engine, mixtures: Sequence[Sequence[float]], benchmarks: Sequence[str] | None = None):
    """The output-space proxy's scores at ``mixtures`` (weights in the lab's order) as rows of the results
    table (:func:`mixlab.analysis.results_table`): kind ``proxy``, method ``output-space``, one row per
    mixture and benchmark it can score (lm_loss and exact_match; others are left out), so every analysis
    of the merged proxy (:func:`mixlab.analysis.proxy_report`, :func:`~mixlab.analysis.rho_summaries`)
    reads it unchanged."""
    import pandas as pd

    from mixlab.analysis import RESULT_COLUMNS
    from mixlab.evaluate import BUILTIN
    from mixlab.simplex import Mixture

    proxy = OutputSpaceProxy(engine)
    specs = [
        b for b in engine.lab.benchmarks if b.evaluator in SUPPORTED and (benchmarks is None or b.name in benchmarks)
    ]
    rows = []
    for w in mixtures:
        m = Mixture.of(engine.names, list(w), normalize=True)
        for b in specs:
            score, n = proxy.score(m.weights, b.name)
            metric = BUILTIN[b.evaluator].metric
            rows.append(
                dict(kind="proxy", label=m.label(), benchmark=b.name, metric=metric, score=score)
                | dict(higher_is_better=b.higher_is_better, n=n, method="output-space", params={})
                | dict(seconds=0.0, device=str(engine.resident.device), weights=m.as_dict())
            )
    df = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    for name in engine.names:
        df[name] = [w.get(name, 0.0) for w in df.weights]
    return df
