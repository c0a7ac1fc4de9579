"""What the scoring loop scores: a typed model/key pair. :class:`MergedModel` (a merge, keyed by the
method, params, weights and exclusions) and :class:`CheckpointModel` (a checkpoint by its content, or the
base): each says how its cache key is built and how the resident model is made into it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mixlab.experts import TaskVector
from mixlab.keys import CacheKey
from mixlab.merge import MergeSpec
from mixlab.resident import ResidentModel
from mixlab.sources import BenchmarkData

if TYPE_CHECKING:
    from mixlab.engine import Engine


@dataclass(frozen=True)
class MergedModel:
    """A merge to score: its cache key per benchmark, and the resident model made into it in place."""

    spec: MergeSpec
    checkpoint = None  # no checkpoint file of its own whose change would stale the score

    def key(self, engine: Engine, bench: BenchmarkData) -> CacheKey:
        return engine._merge_key(self.spec, bench)

    def load(self, resident: ResidentModel) -> None:
        resident.load_merge(self.spec)


@dataclass(frozen=True)
class CheckpointModel:
    """A checkpoint to score: an expert itself, a model trained on a mixture, or (None) the base."""

    checkpoint: TaskVector | None

    def key(self, engine: Engine, bench: BenchmarkData) -> CacheKey:
        return engine._checkpoint_key(None if self.checkpoint is None else self.checkpoint.fingerprint, bench)

    def load(self, resident: ResidentModel) -> None:
        if self.checkpoint is None:
            resident.load_base()
        else:
            resident.load_checkpoint(self.checkpoint)
