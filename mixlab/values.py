"""Per-example values: what a score is the mean of, kept beside it so a loss gets a bootstrap interval and
two models scored on the same examples get a paired difference.

A score is ``Σ values / Σ weights``: for an accuracy each example's value is 1 (right) or 0 and weighs 1;
for a loss (``lm_loss``) each example's value is the summed negative log-likelihood of its completion
tokens and its weight the number of those tokens (the score is the per-token mean). Stored compactly as
little-endian float32 (:meth:`ExampleValues.blob`), in the cache's ``example_values`` table and, for a
shipped lab, in ``example_values.jsonl`` beside ``evaluations.jsonl`` (zlib + base64 per row).
"""

from __future__ import annotations

import base64
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mixlab.errors import CacheError

VALUES_FILE = "example_values.jsonl"  # committed beside a lab's evaluations.jsonl
SCORE_RTOL = 1e-4  # the re-score tolerance of a loss (tests/test_rescore.py): float32 rounding, another CPU's sums


@dataclass(frozen=True, eq=False)
class ExampleValues:
    """One score's per-example values (n,), and their weights (n,) where examples weigh differently."""

    values: np.ndarray  # (n,) float32
    weights: np.ndarray | None = None  # (n,) float32 token counts; None: every example weighs 1

    def __post_init__(self) -> None:
        v = np.ascontiguousarray(self.values, dtype="<f4")
        w = None if self.weights is None else np.ascontiguousarray(self.weights, dtype="<f4")
        if v.ndim != 1 or len(v) == 0:
            raise CacheError(f"per-example values must be a non-empty list, got shape {v.shape}")
        if not np.isfinite(v).all():
            raise CacheError(
                f"refusing to keep non-finite per-example values ({int((~np.isfinite(v)).sum())} of {len(v)})"
            )
        if w is not None and (w.shape != v.shape or not np.isfinite(w).all() or not (w > 0).all()):
            raise CacheError(f"per-example weights must be {len(v)} finite positive numbers, got shape {w.shape}")
        object.__setattr__(self, "values", v)
        object.__setattr__(self, "weights", w)

    @property
    def n(self) -> int:
        return len(self.values)

    def score(self) -> float:
        """Σ values / Σ weights, summed exactly: the score these values are of."""
        total = math.fsum(self.values.astype(float))
        return total / (self.n if self.weights is None else math.fsum(self.weights.astype(float)))

    def agrees(self, score: float) -> bool:
        """Whether these values reproduce ``score`` (up to float32 rounding, :data:`SCORE_RTOL`)."""
        return abs(self.score() - score) <= SCORE_RTOL * max(1.0, abs(score))

    @classmethod
    def of(cls, evaluator: str, raw: Sequence) -> ExampleValues:
        """A built-in evaluator's per-example output: ``lm_loss``'s (summed NLL, tokens) pairs, or the
        right/wrong of ``exact_match`` and ``choice``."""
        if evaluator == "lm_loss":
            pairs = np.asarray(raw, dtype=float).reshape(-1, 2)
            return cls(pairs[:, 0], pairs[:, 1])
        return cls(np.asarray(raw, dtype=float))

    # --- storage: float32 blobs (SQLite) and zlib + base64 text (a lab's committed JSONL) -------------
    def blobs(self) -> tuple[bytes, bytes | None]:
        return self.values.tobytes(), None if self.weights is None else self.weights.tobytes()

    @classmethod
    def from_blobs(cls, values: bytes, weights: bytes | None) -> ExampleValues:
        return cls(np.frombuffer(values, dtype="<f4"), None if weights is None else np.frombuffer(weights, dtype="<f4"))

    def record(self, key: str) -> dict:
        v, w = self.blobs()
        return {"key": key, "n": self.n, "values": _text(v), "weights": None if w is None else _text(w)}

    @classmethod
    def from_record(cls, record: dict) -> tuple[str, ExampleValues]:
        """(key, values) from :meth:`record`'s dict; CacheError naming what is wrong."""
        try:
            key, n = record["key"], int(record["n"])
            w = record.get("weights")
            out = cls.from_blobs(_bytes(record["values"]), None if w is None else _bytes(w))
        except (KeyError, TypeError, ValueError, zlib.error) as e:
            raise CacheError(f"not a per-example values record ({type(e).__name__}: {e})") from None
        if out.n != n:
            raise CacheError(f"per-example values of {key}: {out.n} values for n={n}")
        return key, out


def _text(b: bytes) -> str:
    return base64.b64encode(zlib.compress(b, 9)).decode("ascii")


def _bytes(s: str) -> bytes:
    return zlib.decompress(base64.b64decode(s.encode("ascii"), validate=True))
