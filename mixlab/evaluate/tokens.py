"""How text becomes tokens: :data:`TOKENIZATION` (part of every cache key, :mod:`mixlab.keys`) and the
encoders that follow it. No torch here: the cache key reads this module without the evaluation stack."""

from __future__ import annotations

from collections.abc import Sequence


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# How text becomes tokens, as lm-evaluation-harness does it: a prompt (the start of a sequence) is encoded
# with the tokenizer's own special tokens (add_special_tokens=True: Llama adds BOS, GPT-2 and Qwen add
# none), a continuation without. Part of every cache key (mixlab.keys), so a change here never serves old scores.
TOKENIZATION = "prompt:add_special_tokens=True;continuation:add_special_tokens=False"


def encode_many(tokenizer, texts: Sequence[str], special: bool = False) -> list[list[int]]:
    """One call for many texts (the fast tokenizers batch in Rust); ``special``: the tokenizer's own
    special tokens, for text that starts a sequence."""
    return tokenizer(list(texts), add_special_tokens=special)["input_ids"] if texts else []


def encode_prompts(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Prompts as the tokenizer itself encodes the start of a sequence."""
    return encode_many(tokenizer, texts, special=True)


def whole_text(tokenizer, texts: Sequence[str]) -> list[tuple[list[int], list[int]]]:
    """(context, scored tokens) for texts scored whole: the context is what the tokenizer puts before a
    text by itself (BOS for Llama), or, where it adds nothing, one EOS/pad token to predict the first from."""
    plain, full = encode_many(tokenizer, texts), encode_many(tokenizer, texts, special=True)
    out = []
    for p, f in zip(plain, full):
        head = f[: len(f) - len(p)] if len(f) > len(p) and f[len(f) - len(p) :] == p else []
        out.append((head or [pad_id(tokenizer)], p))
    return out


def pad_id(tokenizer) -> int:
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if tid is not None:
            return tid
    return 0
