"""Cache keys: everything that changes a score, as one frozen value.

A score depends on the model (the base's weights, config and tokenizer; the experts' content, the merge
method, its parameters, the weights and excluded tensors — or one checkpoint's content) and on the
benchmark (its name, the bytes of its data, the evaluator and every option). :class:`CacheKey` holds
both descriptions as canonical JSON; its :attr:`~CacheKey.digest` is the cache's primary key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256

from mixlab.evaluate.tokens import TOKENIZATION
from mixlab.lab import BenchmarkSpec
from mixlab.merge.methods import MergeSpec
from mixlab.simplex import ROUND

# 2: base fingerprints cover config, generation config and tokenizer files; benchmark data hashed from the
# bytes actually scored; the evaluators' tokenisation convention in every benchmark's description
SCHEMA_VERSION = 2


LATER_OPTIONS = ("task", "include_path")  # lm_eval's (mixlab.harness)


def canonical(obj: object) -> str:
    """Canonical JSON: sorted keys, no spaces, floats as written by repr (rounded by the caller)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def benchmark_desc(spec: BenchmarkSpec, data_fingerprint: str) -> dict:
    """What a benchmark is: its data by content, its evaluator and every option."""
    options = spec.model_dump(exclude={"name", "data", "evaluator", "search_data"})  # search_data: not this data
    for later in LATER_OPTIONS:  # options added after keys were first stored: absent when unset, so those keys hold
        if options[later] is None:
            del options[later]
    return {
        "name": spec.name,
        "data": data_fingerprint,
        "evaluator": spec.evaluator,
        "options": options,
        "tokenization": TOKENIZATION,
    }


@dataclass(frozen=True)
class CacheKey:
    model: str  # canonical JSON describing the model
    benchmark: str  # canonical JSON describing the benchmark

    @classmethod
    def of(cls, model: dict, benchmark: dict) -> CacheKey:
        return cls(canonical(model), canonical(benchmark))

    @classmethod
    def merge(cls, base: str, experts: Sequence[str], spec: MergeSpec, benchmark: dict) -> CacheKey:
        """θ_0 + merge(τ, w): base and expert fingerprints, method, params, weights (rounded), exclusions.

        A merge whose weights differ per layer group is another model: its key adds ``layer_groups`` (the
        partition rule's version and every group's weights, rounded). A plain merge's key has no such field,
        so every key stored before layer groups existed is unchanged."""
        model = {
            "kind": "merge",
            "base": base,
            "experts": list(experts),
            "method": spec.method,
            "params": spec.params,
            "weights": [round(w, ROUND) for w in spec.weights],
            "exclude": list(spec.exclude),
        }
        if spec.groups is not None:
            from mixlab.merge.groups import RULE

            model["layer_groups"] = {"rule": RULE, "weights": [[round(w, ROUND) for w in g] for g in spec.groups]}
        return cls.of(model, benchmark)

    @classmethod
    def checkpoint(cls, base: str, checkpoint: str | None, benchmark: dict) -> CacheKey:
        """A checkpoint (by fingerprint) put on the base, or with ``checkpoint=None`` the base itself."""
        model = (
            {"kind": "base", "base": base}
            if checkpoint is None
            else {
                "kind": "checkpoint",
                "base": base,
                "checkpoint": checkpoint,
            }
        )
        return cls.of(model, benchmark)

    @property
    def digest(self) -> str:
        # canonical JSON never holds a raw NUL, so the three parts cannot run into each other
        return sha256(f"{SCHEMA_VERSION}\0{self.model}\0{self.benchmark}".encode()).hexdigest()
