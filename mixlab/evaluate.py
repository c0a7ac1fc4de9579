"""Evaluators: score a causal LM on a benchmark's JSONL examples, in batches.

- ``lm_loss``: mean token NLL of the completion given the prompt (``{"prompt","completion"}``, or
  ``"answer"`` as the completion) or of the whole ``{"text"}``; lower is better.
- ``exact_match``: greedy generation until a stop string or ``max_new_tokens``, compared stripped to
  ``"answer"``; accuracy, higher is better. Rows with an ``"image"`` (a vision-language base) go through
  the base's processor (:func:`image_answers`).
- ``choice``: the option with the highest log-likelihood (``length_normalize``: per token) among
  ``"choices"`` must be ``"label"`` (an index); accuracy.
- ``package.module:function``: called as ``function(model, tokenizer, examples, device)``, returns a
  float or a dict with ``score`` and optionally ``metric``. Its direction is the manifest's
  (``lower_is_better``). The module is imported from the lab's ``plugins`` folders or from installed
  packages, never from the current folder or the app's folder.

A model whose forward pass gives NaN or inf logits fails its evaluation (:data:`NON_FINITE`) instead of
scoring 0: a broken merge must never be cached as a bad score.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mixlab.errors import Cancelled, EvaluationError, MixlabError
from mixlab.lab import LM_EVAL, BenchmarkSpec
from mixlab.lazy import no_grad, torch

Progress = Callable[[int, int], None]
REQUIRED = {"exact_match": ("prompt", "answer"), "choice": ("prompt", "choices", "label")}
NON_FINITE = (
    "the model's forward pass gave NaN or inf logits: the merged weights overflow or hold NaN (check the "
    "experts' scales, lora_alpha and the method's parameters); no score was stored"
)


@dataclass(frozen=True)
class EvalResult:
    score: float
    metric: str
    higher_is_better: bool
    n: int
    seconds: float


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def pick_device(preference: str | None = None) -> torch.device:
    """``preference`` if given, else cuda → mps → cpu."""
    if preference:
        try:
            dev = torch.device(preference)
        except RuntimeError:
            raise EvaluationError(f"unknown device {preference!r}; use cpu, cuda, cuda:N or mps") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise EvaluationError(f"device {preference!r} asked for, but CUDA is not available here")
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            raise EvaluationError(f"device {preference!r}: only {torch.cuda.device_count()} CUDA device(s) here")
        if dev.type == "mps" and not _mps_available():
            raise EvaluationError(f"device {preference!r} asked for, but MPS (Apple GPU) is not available here")
        if dev.type not in ("cpu", "cuda", "mps"):
            raise EvaluationError(f"device {preference!r} is not supported; use cpu, cuda, cuda:N or mps")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def quiet_transformers() -> None:
    """No per-load progress bars or deprecation chatter from transformers/peft on our users' terminals."""
    import warnings

    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def auto_batch_size(config, free_bytes: int, seq_len: int = 512, dtype_bytes: int = 2, cap: int = 512) -> int:
    """Rows per batch that fit in half of ``free_bytes``: per row, the float32 logits (seq × vocab) plus
    the activations kept by a forward pass (≈ 16 · seq × hidden per layer at ``dtype_bytes``)."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config  # a VLM's language model
    hidden = getattr(config, "hidden_size", 4096)
    layers = getattr(config, "num_hidden_layers", 32)
    vocab = getattr(config, "vocab_size", 32000)
    per_row = seq_len * (4 * vocab + 16 * hidden * layers * dtype_bytes)
    return int(max(1, min(cap, (free_bytes // 2) // max(per_row, 1))))


def read_examples(path: Path, spec: BenchmarkSpec) -> list[dict]:
    """Read and check a benchmark's JSONL; errors name the file, line and field."""
    return read_benchmark(path, spec)[0]


def read_benchmark(path: Path, spec: BenchmarkSpec) -> tuple[list[dict], str]:
    """(examples, sha256 of the bytes they were parsed from): one read, so a cache key built from the
    hash always describes the examples that were scored."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise EvaluationError(f"{path}: cannot read benchmark {spec.name!r}: {e.strerror or e}") from None
    examples = []
    for i, line in enumerate(raw.split(b"\n"), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise EvaluationError(f"{path}:{i}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        if not text.strip():
            continue
        try:
            ex = json.loads(text)
        except json.JSONDecodeError as e:
            raise EvaluationError(f"{path}:{i}: not valid JSON: {e}") from None
        if not isinstance(ex, dict):
            raise EvaluationError(f"{path}:{i}: each line must be a JSON object")
        _check_example(ex, spec.evaluator, f"{path}:{i}")
        examples.append(ex)
        if spec.limit and len(examples) >= spec.limit:
            break
    if not examples:
        raise EvaluationError(f"{path}: benchmark {spec.name!r} has no examples")
    return examples, hashlib.sha256(raw).hexdigest()


def _check_example(ex: dict, evaluator: str, where: str) -> None:
    if "image" in ex and (evaluator != "exact_match" or not isinstance(ex["image"], str)):
        raise EvaluationError(f"{where}: 'image' must be a path inside the lab (a string), on exact_match rows")
    if evaluator == "lm_loss":
        if not (
            isinstance(ex.get("text"), str)
            or (isinstance(ex.get("prompt"), str) and isinstance(ex.get("completion", ex.get("answer")), str))
        ):
            raise EvaluationError(f"{where}: lm_loss needs 'text', or 'prompt' with 'completion' (or 'answer')")
        return
    for field in REQUIRED.get(evaluator, ()):
        if field not in ex:
            raise EvaluationError(f"{where}: {evaluator} needs field {field!r}")
    if evaluator in REQUIRED and not isinstance(ex["prompt"], str):
        raise EvaluationError(f"{where}: 'prompt' must be a string, got {ex['prompt']!r}")
    if evaluator == "exact_match" and (
        isinstance(ex["answer"], bool) or not isinstance(ex["answer"], (str, int, float))
    ):
        raise EvaluationError(f"{where}: 'answer' must be a string or a number, got {ex['answer']!r}")
    if evaluator == "choice":
        choices, label = ex["choices"], ex["label"]
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise EvaluationError(f"{where}: 'choices' must be a list of at least two strings")
        if not isinstance(label, int) or not 0 <= label < len(choices):
            raise EvaluationError(f"{where}: 'label' must be an index into 'choices', got {label!r}")


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# How text becomes tokens, as lm-evaluation-harness does it: a prompt (the start of a sequence) is encoded
# with the tokenizer's own special tokens (add_special_tokens=True: Llama adds BOS, GPT-2 and Qwen add
# none), a continuation without. Part of every cache key (mixlab.keys), so a change here never serves old scores.
TOKENIZATION = "prompt:add_special_tokens=True;continuation:add_special_tokens=False"


def _encode_many(tokenizer, texts: Sequence[str], special: bool = False) -> list[list[int]]:
    """One call for many texts (the fast tokenizers batch in Rust); ``special``: the tokenizer's own
    special tokens, for text that starts a sequence."""
    return tokenizer(list(texts), add_special_tokens=special)["input_ids"] if texts else []


def _prompts(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Prompts as the tokenizer itself encodes the start of a sequence."""
    return _encode_many(tokenizer, texts, special=True)


def _whole_text(tokenizer, texts: Sequence[str]) -> list[tuple[list[int], list[int]]]:
    """(context, scored tokens) for texts scored whole: the context is what the tokenizer puts before a
    text by itself (BOS for Llama), or, where it adds nothing, one EOS/pad token to predict the first from."""
    plain, full = _encode_many(tokenizer, texts), _encode_many(tokenizer, texts, special=True)
    out = []
    for p, f in zip(plain, full):
        head = f[: len(f) - len(p)] if len(f) > len(p) and f[len(f) - len(p) :] == p else []
        out.append((head or [_pad_id(tokenizer)], p))
    return out


def _pad_id(tokenizer) -> int:
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if tid is not None:
            return tid
    return 0


def _pad(seqs: Sequence[list[int]], pad: int, device, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of token lists padded to one width, on the right or (``left``) on the left."""
    width = max(len(s) for s in seqs)
    rows = [[pad] * (width - len(s)) + s if left else s + [pad] * (width - len(s)) for s in seqs]
    marks = [[0] * (width - len(s)) + [1] * len(s) if left else [1] * len(s) + [0] * (width - len(s)) for s in seqs]
    return torch.tensor(rows, device=device), torch.tensor(marks, device=device)


def continuation_logprobs(model, batch: Sequence[tuple[list[int], list[int]]], pad: int, device) -> list[torch.Tensor]:
    """Per-token log p(continuation | context) for each (context ids, continuation ids) pair."""
    seqs = [c + t for c, t in batch]
    ids, mask = _pad(seqs, pad, device)  # (B, T)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()  # position t predicts t+1
    # log p(next token) = its logit − logsumexp: no (B, T, V) log-softmax copy, one transfer for the batch
    token_logp = (logits.gather(-1, ids[:, 1:, None]).squeeze(-1) - torch.logsumexp(logits, -1)).cpu()
    if not bool(torch.isfinite(token_logp[mask[:, 1:].bool().cpu()]).all()):  # a NaN/inf logit makes its row's lse so
        raise EvaluationError(NON_FINITE)
    return [token_logp[i, len(c) - 1 : len(c) - 1 + len(t)] for i, (c, t) in enumerate(batch)]


class _Batches:
    """Runs ``fn`` over items in batches, halving the batch on CUDA out-of-memory. ``before`` sees
    each batch's items first (the batched-mixture path sets per-row mixture weights there)."""

    def __init__(
        self, batch_size: int, progress: Progress | None, cancel, before: Callable[[Sequence], None] | None = None
    ):
        self.batch_size, self.progress, self.cancel, self.before = batch_size, progress, cancel, before

    def run(self, items: Sequence, fn: Callable[[Sequence], list]) -> list:
        out, i, size = [], 0, self.batch_size
        while i < len(items):
            if self.cancel is not None and self.cancel.is_set():
                raise Cancelled("evaluation cancelled")
            batch = items[i : i + size]
            try:
                if self.before is not None:
                    self.before(batch)
                out.extend(fn(batch))
            except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
                if not _is_oom(e):
                    raise
                if size == 1:
                    raise EvaluationError(
                        "out of memory at batch size 1; use a smaller model or a device with more memory"
                    ) from None
                size = max(1, size // 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            i += size
            if self.progress:
                self.progress(min(i, len(items)), len(items))
        return out


def _is_oom(e: BaseException) -> bool:
    """CUDA's OutOfMemoryError, Python's MemoryError, or the CPU allocator's RuntimeError."""
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in str(e)


def greedy_generate(
    model, tokenizer, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str], device
) -> list[str]:
    """Greedy continuations of ``prompts`` (one left-padded batch, KV cache), cut at the first stop string.

    A plain loop rather than ``model.generate``: on small models generate's per-step bookkeeping costs
    more than the forward pass. Rows stop together once each has produced a stop token or EOS.
    """
    seqs = _prompts(tokenizer, prompts)
    return _greedy(model, tokenizer, seqs, max_new_tokens, stop, device)


def _greedy(model, tokenizer, seqs: Sequence[list[int]], max_new_tokens: int, stop: Sequence[str], device):
    """:func:`greedy_generate` on prompts already tokenised."""
    pad = _pad_id(tokenizer)
    ids, mask = _pad(seqs, pad, device, left=True)
    stop_ids = [t[0] for t in (_encode(tokenizer, s) for s in stop) if len(t) == 1]
    if tokenizer.eos_token_id is not None:
        stop_ids.append(tokenizer.eos_token_id)
    stop_t = torch.tensor(stop_ids or [-1], device=device)
    pos = (mask.cumsum(-1) - 1).clamp_min(0)  # (B, T) positions that skip the left padding
    # the prompt pass needs only the last position's logits (not B × T × V of them), where the model allows
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **last_only)
    past, pos = out.past_key_values, pos[:, -1:]
    new = []
    done = torch.zeros(len(seqs), dtype=torch.bool, device=device)
    for _ in range(max_new_tokens):
        last = out.logits[:, -1]  # (B, V)
        if not bool(torch.isfinite(last).all()):
            raise EvaluationError(NON_FINITE)
        nxt = last.argmax(-1)  # (B,)
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        new.append(nxt)
        done |= torch.isin(nxt, stop_t)
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        pos = pos + 1
        out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, past_key_values=past, use_cache=True)
        past = out.past_key_values
    texts = tokenizer.batch_decode(torch.stack(new, 1), skip_special_tokens=True) if new else [""] * len(seqs)
    return [_cut(t, stop) for t in texts]


def _cut(text: str, stop: Sequence[str]) -> str:
    for s in stop:
        j = text.find(s)
        if j >= 0:
            text = text[:j]
    return text


# Each built-in evaluator is two steps: ``items`` tokenises the examples once into work items (dicts with
# the example's index "j"), which do not depend on the weights, so an engine scoring many mixtures keeps
# them; ``score`` maps items to per-example values. The same code scores one model or, with groups,
# many mixtures in one stream of batches.


def _lm_loss_items(tokenizer, examples, spec: BenchmarkSpec) -> list[dict]:
    texts = [ex["text"] if "text" in ex and "prompt" not in ex else None for ex in examples]
    prompts = iter(_prompts(tokenizer, [ex["prompt"] for ex, t in zip(examples, texts) if t is None]))
    conts = iter(
        _encode_many(tokenizer, [ex.get("completion", ex.get("answer")) for ex, t in zip(examples, texts) if t is None])
    )
    whole = iter(_whole_text(tokenizer, [t for t in texts if t is not None]))
    return [
        {"j": j, "pair": next(whole) if t is not None else (next(prompts), next(conts))} for j, t in enumerate(texts)
    ]


def lm_loss(model, tokenizer, items, examples, device, batches: _Batches, spec) -> list[tuple[float, int]]:
    """Per example: (summed NLL of the completion tokens, number of tokens)."""
    pad = _pad_id(tokenizer)
    return batches.run(
        items,
        lambda b: [
            (-lp.sum().item(), len(lp)) for lp in continuation_logprobs(model, [it["pair"] for it in b], pad, device)
        ],
    )


def _exact_match_items(tokenizer, examples, spec: BenchmarkSpec) -> list[dict]:
    return [{"j": j, "ids": ids} for j, ids in enumerate(_prompts(tokenizer, [ex["prompt"] for ex in examples]))]


def exact_match(model, tokenizer, items, examples, device, batches: _Batches, spec) -> list[bool]:
    outs = batches.run(
        items, lambda b: _greedy(model, tokenizer, [it["ids"] for it in b], spec.max_new_tokens, spec.stop, device)
    )
    return [o.strip() == str(ex["answer"]).strip() for o, ex in zip(outs, examples)]


def _choice_items(tokenizer, examples, spec: BenchmarkSpec) -> list[dict]:
    prompts = _prompts(tokenizer, [ex["prompt"] for ex in examples])
    options = iter(_encode_many(tokenizer, [c for ex in examples for c in ex["choices"]]))
    items = []
    for j, (ex, ids) in enumerate(zip(examples, prompts)):
        ctx = ids
        items += [{"j": j, "pair": (ctx, next(options))} for _ in ex["choices"]]
    return items


def choice(model, tokenizer, items, examples, device, batches: _Batches, spec) -> list[bool]:
    pad = _pad_id(tokenizer)

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


def _aggregate(evaluator: str, values: list) -> float:
    if evaluator == "lm_loss":
        return math.fsum(v[0] for v in values) / max(sum(v[1] for v in values), 1)
    return sum(values) / len(values)


_IMPORT_LOCK = threading.Lock()


def _untrusted_paths() -> set[str]:
    """sys.path entries a plugin is never imported from: the current folder and the running script's
    folder (``python -m mixlab`` run inside a lab, or the app's own folder under ``streamlit run``)."""
    out = {os.path.realpath(os.getcwd())}
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if main:
        out.add(os.path.realpath(os.path.dirname(os.path.abspath(main))))
    return out


def load_plugin(target: str, plugin_dirs: Sequence[Path] = ()) -> Callable:
    """Import ``package.module:function`` from ``plugin_dirs`` (the lab's ``plugins`` folders) or from
    installed packages; sys.path entries for the current folder and the script's folder are left out."""
    module_name, _, fn_name = target.partition(":")
    with _IMPORT_LOCK:
        saved = sys.path[:]
        bad = _untrusted_paths()
        sys.path[:] = [str(d) for d in plugin_dirs] + [
            p for p in saved if p not in ("", ".") and os.path.realpath(p) not in bad
        ]
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            where = "the lab's plugins folders or installed packages" if plugin_dirs else "installed packages"
            raise EvaluationError(
                f"evaluator {target!r}: cannot import {module_name!r} from {where}: {e} (list a folder inside the "
                "lab in lab.toml's plugins = [...], or install the package)"
            ) from None
        except Exception as e:  # the module's own code failed on import
            raise EvaluationError(
                f"evaluator {target!r}: importing {module_name!r} raised {type(e).__name__}: {e}"
            ) from None
        finally:
            sys.path[:] = saved
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise EvaluationError(f"evaluator {target!r}: {module_name} has no function {fn_name!r}")
    return fn


class _FiniteLogits:
    """A forward hook that fails any forward pass with NaN/inf logits (for plugins, whose loops we do not own)."""

    def __init__(self, model):
        self.model, self.handle = model, None

    def __enter__(self):
        def check(_module, _args, out):
            logits = getattr(out, "logits", None)
            if isinstance(logits, torch.Tensor) and not bool(torch.isfinite(logits).all()):
                raise EvaluationError(NON_FINITE)

        if hasattr(self.model, "register_forward_hook"):
            self.handle = self.model.register_forward_hook(check)
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.remove()


def has_images(examples: Sequence[dict]) -> bool:
    """Whether a benchmark's rows are image questions (for a vision-language base's processor)."""
    return bool(examples) and "image" in examples[0]


def open_image(path):
    """The image at ``path`` as RGB (a PIL image), read whole now; a file that is not one, is cut short, or
    declares more pixels than PIL opens safely (``PIL.Image.MAX_IMAGE_PIXELS``: a decompression bomb) is an
    EvaluationError naming it."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    fix = "replace it with a PNG or JPEG image, or remove its row from the benchmark"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise EvaluationError(
            f"image {path}: too many pixels to open safely ({e}); {fix} (a smaller one: at most "
            f"{Image.MAX_IMAGE_PIXELS:,} pixels)"
        ) from None
    except UnidentifiedImageError:
        raise EvaluationError(f"image {path}: not an image file PIL can read; {fix}") from None
    except (OSError, SyntaxError, ValueError) as e:  # PIL's "image file is truncated", "broken PNG file", …
        what = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        if "truncated" in what:
            raise EvaluationError(f"image {path}: the file is truncated (cut short); {fix}") from None
        raise EvaluationError(f"image {path}: cannot read it ({what}); {fix}") from None


def image_answers(
    model, processor, examples: Sequence[dict], spec: BenchmarkSpec, device, batches: _Batches
) -> list[str]:
    """Greedy answers to image questions (rows ``{"image", "prompt", ...}``; the image path resolved by the
    engine into ``_image``): the base's processor puts each image and its prompt into one batch (the
    class's image placeholder is prepended where the prompt lacks the image token:
    :func:`mixlab.processors.image_inputs`), generation stops at ``stop`` or ``max_new_tokens``."""
    from mixlab.processors import image_inputs

    tok = processor.tokenizer

    def answer(batch):
        images = [open_image(ex["_image"]) for ex in batch]
        inputs = image_inputs(processor, [ex["prompt"] for ex in batch], images).to(device)
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        with _FiniteLogits(model):
            out = model.generate(
                **inputs, max_new_tokens=spec.max_new_tokens, do_sample=False, pad_token_id=_pad_id(tok)
            )
        new = tok.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return [_cut(t, spec.stop) for t in new]

    return batches.run(list(examples), answer)


def _run_plugin(spec: BenchmarkSpec, model, tokenizer, examples, device, plugin_dirs) -> tuple[float, str]:
    fn = load_plugin(spec.evaluator, plugin_dirs)
    try:
        with _FiniteLogits(model):
            result = fn(model, tokenizer, examples, device)
    except MixlabError:
        raise
    except Exception as e:  # the plugin's own failure: one clear line, the evaluation fails, nothing is stored
        raise EvaluationError(f"evaluator {spec.evaluator!r} raised {type(e).__name__}: {e}") from None
    metric = "score"
    if isinstance(result, dict):
        if "score" not in result:
            raise EvaluationError(f"evaluator {spec.evaluator!r} returned a dict without 'score'")
        metric = str(result.get("metric", "score"))
        said = result.get("higher_is_better")
        if said is not None and bool(said) != spec.higher_is_better:
            fix = "lower_is_better = true" if not said else "lower_is_better = false (or remove it)"
            raise EvaluationError(
                f"benchmark {spec.name!r}: evaluator {spec.evaluator!r} says higher_is_better={bool(said)}, but the "
                f"lab says the opposite; set {fix} on this benchmark in lab.toml"
            )
        result = result["score"]
    if isinstance(result, bool):
        raise EvaluationError(f"evaluator {spec.evaluator!r} returned {result!r}, not a number")
    try:
        return float(result), metric
    except (TypeError, ValueError):
        raise EvaluationError(f"evaluator {spec.evaluator!r} returned {result!r}, not a number") from None


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
        with _FiniteLogits(model):
            score, metric, n = lm_eval_harness.run(spec, model, tokenizer, device, batch_size, **harness)
    elif spec.evaluator == "exact_match" and has_images(examples):
        if processor is None:
            raise EvaluationError(
                f"benchmark {spec.name!r} has images: the base needs a processor (a vision-language model)"
            )
        metric = "accuracy"
        outs = image_answers(model, processor, examples, spec, device, _Batches(batch_size, progress, cancel))
        score = _aggregate("exact_match", [o.strip() == str(ex["answer"]).strip() for o, ex in zip(outs, examples)])
    elif spec.evaluator in BUILTIN:
        ev = BUILTIN[spec.evaluator]
        metric = ev.metric
        items = prepare(tokenizer, spec, examples, context_length(model)) if items is None else items
        values = ev.score(model, tokenizer, items, examples, device, _Batches(batch_size, progress, cancel), spec)
        score = _aggregate(spec.evaluator, values)
    else:
        score, metric = _run_plugin(spec, model, tokenizer, examples, device, plugin_dirs)
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

    batches = _Batches(batch_size, progress, cancel, before)
    values = ev.score(model, tokenizer, grouped, repeated, device, batches, spec)
    seconds = (time.perf_counter() - start) / n_groups
    out = []
    for g in range(n_groups):
        score = _aggregate(spec.evaluator, values[g * n : (g + 1) * n])
        if not math.isfinite(score):
            raise EvaluationError(f"benchmark {spec.name!r} gave a non-finite score {score}")
        out.append(EvalResult(float(score), metric, hib, n, seconds))
    return out
