"""The built-in evaluators, ``lm_loss``, ``exact_match`` and ``choice`` (see :mod:`mixlab.evaluate`), and the
two forward passes they are made of: continuation log-probabilities and greedy generation.

Each built-in evaluator is two steps: ``items`` tokenises the examples once into work items (dicts with
the example's index "j"), which do not depend on the weights, so an engine scoring many mixtures keeps
them; ``score`` maps items to per-example values. The same code scores one model or, with groups,
many mixtures in one stream of batches.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mixlab.errors import EvaluationError
from mixlab.evaluate.batches import NON_FINITE, Batches, padded
from mixlab.evaluate.tokens import encode, encode_many, encode_prompts, pad_id, whole_text
from mixlab.lab import BenchmarkSpec
from mixlab.lazy import torch


def continuation_logprobs(model, batch: Sequence[tuple[list[int], list[int]]], pad: int, device) -> list[torch.Tensor]:
    """Per-token log p(continuation | context) for each (context ids, continuation ids) pair."""
    seqs = [c + t for c, t in batch]
    ids, mask = padded(seqs, pad, device)  # (B, T)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()  # position t predicts t+1
    # log p(next token) = its logit − logsumexp: no (B, T, V) log-softmax copy, one transfer for the batch
    token_logp = (logits.gather(-1, ids[:, 1:, None]).squeeze(-1) - torch.logsumexp(logits, -1)).cpu()
    if not bool(torch.isfinite(token_logp[mask[:, 1:].bool().cpu()]).all()):  # a NaN/inf logit makes its row's lse so
        raise EvaluationError(NON_FINITE)
    return [token_logp[i, len(c) - 1 : len(c) - 1 + len(t)] for i, (c, t) in enumerate(batch)]


def greedy_generate(
    model, tokenizer, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str], device
) -> list[str]:
    """Greedy continuations of ``prompts`` (one left-padded batch, KV cache), cut at the first stop string.

    A plain loop rather than ``model.generate``: on small models generate's per-step bookkeeping costs
    more than the forward pass. Rows stop together once each has produced a stop token or EOS.
    """
    seqs = encode_prompts(tokenizer, prompts)
    return _greedy(model, tokenizer, seqs, max_new_tokens, stop, device)


def _greedy(model, tokenizer, seqs: Sequence[list[int]], max_new_tokens: int, stop: Sequence[str], device):
    """:func:`greedy_generate` on prompts already tokenised."""

    def argmax(last: list[torch.Tensor]) -> torch.Tensor:
        if not bool(torch.isfinite(last[0]).all()):
            raise EvaluationError(NON_FINITE)
        return last[0].argmax(-1)

    return greedy_decode([model], tokenizer, seqs, max_new_tokens, stop, device, argmax)


def keeps_last_logits(model) -> bool:
    """Whether ``model``'s forward can return the last position's logits only (``logits_to_keep``): the greedy
    loop's prompt pass asks for them, and batches are sized by it (Engine.batch_size_for)."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def greedy_decode(
    models: Sequence,
    tokenizer,
    seqs: Sequence[list[int]],
    max_new_tokens: int,
    stop: Sequence[str],
    device,
    choose: Callable[[list[torch.Tensor]], torch.Tensor],
) -> list[str]:
    """The greedy loop shared by the exact-match evaluator (one model) and the output-space proxy (one model
    per expert): tokenised ``seqs`` in one left-padded batch, each model with its own KV cache; at every step
    ``choose`` maps the models' last logits (each (B, V)) to the next tokens (B,), which every model is fed.
    Rows stop together once each has produced a one-token stop string or EOS; texts are cut at the first
    stop string."""
    pad = pad_id(tokenizer)
    ids, mask = padded(seqs, pad, device, left=True)
    stop_ids = [t[0] for t in (encode(tokenizer, s) for s in stop) if len(t) == 1]
    if tokenizer.eos_token_id is not None:
        stop_ids.append(tokenizer.eos_token_id)
    stop_t = torch.tensor(stop_ids or [-1], device=device)
    pos = (mask.cumsum(-1) - 1).clamp_min(0)  # (B, T) positions that skip the left padding
    outs = []
    for m in models:
        # the prompt pass needs only the last position's logits (not B × T × V of them), where the model allows
        last_only = {"logits_to_keep": 1} if keeps_last_logits(m) else {}
        outs.append(m(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **last_only))
    pos = pos[:, -1:]
    new = []
    done = torch.zeros(len(seqs), dtype=torch.bool, device=device)
    for _ in range(max_new_tokens):
        nxt = choose([o.logits[:, -1] for o in outs])  # (B,)
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        new.append(nxt)
        done |= torch.isin(nxt, stop_t)
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        pos = pos + 1
        step = {"input_ids": nxt[:, None], "attention_mask": mask, "position_ids": pos, "use_cache": True}
        outs = [m(past_key_values=o.past_key_values, **step) for m, o in zip(models, outs)]
    texts = tokenizer.batch_decode(torch.stack(new, 1), skip_special_tokens=True) if new else [""] * len(seqs)
    return [cut_at_stop(t, stop) for t in texts]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    for s in stop:
        j = text.find(s)
        if j >= 0:
            text = text[:j]
    return text


def _lm_loss_items(tokenizer, examples, spec: BenchmarkSpec) -> list[dict]:
    texts = [ex["text"] if "text" in ex and "prompt" not in ex else None for ex in examples]
    prompts = iter(encode_prompts(tokenizer, [ex["prompt"] for ex, t in zip(examples, texts) if t is None]))
    conts = iter(
        encode_many(tokenizer, [ex.get("completion", ex.get("answer")) for ex, t in zip(examples, texts) if t is None])
    )
    whole = iter(whole_text(tokenizer, [t for t in texts if t is not None]))
    return [
        {"j": j, "pair": next(whole) if t is not None else (next(prompts), next(conts))} for j, t in enumerate(texts)
    ]


def lm_loss(model, tokenizer, items, examples, device, batches: Batches, spec) -> list[tuple[float, int]]:
    """Per example: (summed NLL of the completion tokens, number of tokens)."""
    pad = pad_id(tokenizer)
    return batches.run(
        items,
        lambda b: [
            (-lp.sum().item(), len(lp)) for lp in continuation_logprobs(model, [it["pair"] for it in b], pad, device)
        ],
    )


def _exact_match_items(tokenizer, examples, spec: BenchmarkSpec) -> list[dict]:
    return [{"j": j, "ids": ids} for j, ids in enumerate(encode_prompts(tokenizer, [ex["prompt"] for ex in examples]))]


def exact_match(model, tokenizer, items, examples, device, batches: Batches, spec) -> list[bool]:
    outs = batches.run(
        items, lambda b: _greedy(model, tokenizer, [it["ids"] for it in b], spec.max_new_tokens, spec.stop, device)
    )
    return [o.strip() == str(ex["answer"]).strip() for o, ex in zip(outs, examples)]


def _choice_items(tokenizer, examples, spec: BenchmarkSpec) -> list[dict]:
    prompts = encode_prompts(tokenizer, [ex["prompt"] for ex in examples])
    options = iter(encode_many(tokenizer, [c for ex in examples for c in ex["choices"]]))
    items = []
    for j, (ex, ids) in enumerate(zip(examples, prompts)):
        ctx = ids
        items += [{"j": j, "pair": (ctx, next(options))} for _ in ex["choices"]]
    return items


def choice(model, tokenizer, items, examples, device, batches: Batches, spec) -> list[bool]:
    pad = pad_id(tokenizer)

    def score(batch):
        lps = continuation_logprobs(model, [it["pair"] for it in batch], pad, device)
        return [lp.mean().item() if spec.length_normalize else lp.sum().item() for lp in lps]

    scores = batches.run(items, score)
    hits, k = [], 0
    for ex in examples:
        options = scores[k : k + len(ex["choices"])]
        k += len(ex["choices"])
        hits.append(max(range(len(options)), key=options.__getitem__) == ex["label"])
    return hits


@dataclass(frozen=True)
class Builtin:
    items: Callable  # (tokenizer, examples, spec) -> work items
    score: Callable  # (model, tokenizer, items, examples, device, batches, spec) -> per-example values
    metric: str  # its direction is the benchmark's: BenchmarkSpec.higher_is_better


BUILTIN = {
    "lm_loss": Builtin(_lm_loss_items, lm_loss, "loss"),
    "exact_match": Builtin(_exact_match_items, exact_match, "accuracy"),
    "choice": Builtin(_choice_items, choice, "accuracy"),
}


def aggregate(evaluator: str, values: list) -> float:
    if evaluator == "lm_loss":
        return math.fsum(v[0] for v in values) / max(sum(v[1] for v in values), 1)
    return sum(values) / len(values)
