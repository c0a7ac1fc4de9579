"""Synthetic domains with checkable answers, and the character-level tokenizer that reads them.

Each domain draws (prompt, answer) pairs from a seeded RNG. They share one alphabet and one format
(``<task>:<input>=<answer>\\n``) so a small model must split its capacity between them.
"""

from __future__ import annotations

import random
from collections.abc import Callable

LETTERS = "abcdefgh"
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz+=:-\n "


def _word(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(lo, hi)))


def addition(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, 19), rng.randint(0, 19)
    return f"add:{a}+{b}=", str(a + b)


def reversal(rng: random.Random) -> tuple[str, str]:
    w = _word(rng, 3, 6)
    return f"rev:{w}=", w[::-1]


def sorting(rng: random.Random) -> tuple[str, str]:
    w = _word(rng, 5, 8)
    return f"sort:{w}=", "".join(sorted(w))


def counting(rng: random.Random) -> tuple[str, str]:
    w = _word(rng, 4, 9)
    c = rng.choice(w)
    return f"count:{c}:{w}=", str(w.count(c))


def copying(rng: random.Random) -> tuple[str, str]:
    w = _word(rng, 3, 8)
    return f"copy:{w}=", w


# General data: not a domain of any expert or benchmark; the "bit of everything" a pretrained model has seen
# (pretraining mixes it with every domain; experts may replay a share of it).
GENERAL = "copy"
GENERAL_TASK = copying

DOMAINS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "add": addition,
    "rev": reversal,
    "sort": sorting,
    "count": counting,
}


def examples(domain: str, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` distinct-seeded examples of a domain."""
    rng = random.Random(f"{domain}:{seed}")
    task = GENERAL_TASK if domain == GENERAL else DOMAINS[domain]
    return [task(rng) for _ in range(n)]


def build_tokenizer():
    """A character-level fast tokenizer: one token per character of ALPHABET, plus specials. Like Llama's,
    it puts BOS before a sequence itself (a post-processor), so ``tok(prompt)`` is what the model was
    trained on and plain ``model.generate(**tok(prompt, return_tensors="pt"))`` works."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + list(ALPHABET))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    bos = vocab["<bos>"]
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
