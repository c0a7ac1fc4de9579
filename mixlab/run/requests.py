"""What a recorded job runs: the typed requests :class:`ProxyJob`, :class:`CheckpointsJob`, :class:`SearchJob`,
:class:`RecycleJob`, each with its JSON spec form (what a job record keeps) and its body; :func:`request` reads a
record's kind and spec back into one. A first run and a resume run the same body, and cached scores are reused,
so a resume computes only what was missing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from mixlab.errors import EvaluationError, MixlabError
from mixlab.scoring.request import ProxyRequest

# a job body: fn(progress(done, total, message), cancel_event) -> result
JobFn = Callable[[Callable[[int, int, str], None], threading.Event], Any]


@dataclass(frozen=True)
class ProxyJob:
    """A :class:`~mixlab.scoring.request.ProxyRequest` run by the executor named ``executor`` (``local`` or
    ``ray``). Its record keeps the request's JSON form (:meth:`ProxyRequest.to_spec`), with ``backend`` for
    the executor (the word of earlier versions: their records, and their dedup keys, read the same)."""

    kind: ClassVar[str] = "proxy"
    request: ProxyRequest
    executor: str = "local"

    @classmethod
    def from_spec(cls, spec: dict, lab) -> ProxyJob:
        return cls(ProxyRequest.from_spec(spec, lab), spec.get("backend", "local"))

    def to_spec(self) -> dict:
        return self.request.to_spec() | ({"backend": self.executor} if self.executor != "local" else {})

    def describe(self) -> str:
        """What the dashboard lists it as."""
        from mixlab.tables import params_label

        m, mixtures = self.request.method, self.request.mixtures
        what = mixtures[0].label() if len(mixtures) == 1 else f"{len(mixtures)} mixtures"
        return f"{m.name} {params_label(m.params)} at {what}"

    def body(self, engine) -> JobFn:
        from mixlab.run.executors import shared

        def sweep(progress, cancel):
            result = shared(self.executor).run(engine, self.request, progress=progress, cancel=cancel)
            if result.failed:
                raise EvaluationError(f"{result.summary()}; the other scores are cached (resume to retry)")
            return result.evaluations

        return sweep


@dataclass(frozen=True)
class CheckpointsJob:
    """Scores of the lab's base, experts and trained mixtures on ``benchmarks`` (None: all)."""

    kind: ClassVar[str] = "checkpoints"
    benchmarks: list[str] | None = None

    @classmethod
    def from_spec(cls, spec: dict, lab=None) -> CheckpointsJob:
        return cls(spec.get("benchmarks"))

    def to_spec(self) -> dict:
        return {} if self.benchmarks is None else {"benchmarks": self.benchmarks}

    def describe(self) -> str:
        return "checkpoints" + (f" on {', '.join(self.benchmarks)}" if self.benchmarks else "")

    def body(self, engine) -> JobFn:
        from mixlab.scoring import checkpoints

        return lambda progress, cancel: checkpoints.checkpoint_scores(
            engine, self.benchmarks, progress=progress, cancel=cancel
        )


@dataclass(frozen=True)
class SearchJob:
    """A search whose study grows to ``target`` trials (the study's size when it was asked for plus the
    trials asked), so a resumed search runs only the trials its interruption left undone."""

    kind: ClassVar[str] = "search"
    objectives: list[str]
    sampler: str
    target: int
    seed: int = 0
    fidelity: int | None = None
    allow_test: bool = False
    study: str | None = None
    executor: str = "local"
    space: str = "simplex"  # mixlab.search.SPACES

    @classmethod
    def from_spec(cls, spec: dict, lab=None) -> SearchJob:
        return cls(
            spec["objectives"],
            spec["sampler"],
            spec["target"],
            spec.get("seed", 0),
            spec.get("fidelity"),
            spec.get("allow_test", False),
            spec.get("study"),
            spec.get("backend", "local"),
            spec.get("space", "simplex"),  # absent from older records
        )

    def to_spec(self) -> dict:
        return {
            "objectives": self.objectives,
            "sampler": self.sampler,
            "seed": self.seed,
            "fidelity": self.fidelity,
            "allow_test": self.allow_test,
            "study": self.study,
            "target": self.target,
            "backend": self.executor,
        } | ({"space": self.space} if self.space != "simplex" else {})

    def describe(self) -> str:
        return f"search {' and '.join(self.objectives)} ({self.sampler}, up to {self.target} trials)"

    def body(self, engine) -> JobFn:
        from mixlab.run.executors import shared
        from mixlab.search import Search

        def run(progress, cancel):
            search = Search(
                engine,
                self.objectives,
                sampler=self.sampler,
                seed=self.seed,
                fidelity=self.fidelity,
                allow_test=self.allow_test,
                name=self.study,
                backend=shared(self.executor),
                space=self.space,
            )
            left = max(0, self.target - search.finished_trials())
            result = search.run(left, progress=progress, cancel=cancel)
            if len(result.objectives) == 1:  # what the winner is read against (a front has no one winner)
                progress(left, left, "scoring the baselines on test")
                result.baselines = search.baselines(result.best[0]["weights"], cancel=cancel)
            return result

        return run


@dataclass(frozen=True)
class RecycleJob:
    """Checkpoint recycling (:func:`mixlab.recycle.compare`) with these settings."""

    kind: ClassVar[str] = "recycle"
    objective: str
    sampler: str
    trials: int
    seed: int
    space: str = "simplex"  # mixlab.search.SPACES
    start: bool = False  # start from the greedy soup and the best single checkpoint

    @classmethod
    def from_spec(cls, spec: dict, lab=None) -> RecycleJob:
        # space and start are absent from older records: their defaults
        return cls(
            spec["objective"], spec["sampler"], spec["trials"], spec["seed"], spec.get("space", "simplex"),
            spec.get("start", False),
        )  # fmt: skip

    def to_spec(self) -> dict:
        spec = {"objective": self.objective, "sampler": self.sampler, "trials": self.trials, "seed": self.seed}
        return (
            spec | ({"space": self.space} if self.space != "simplex" else {}) | ({"start": True} if self.start else {})
        )

    def describe(self) -> str:
        return f"recycling ({self.objective}, {self.trials} trials)"

    def body(self, engine) -> JobFn:
        from mixlab.recycle import compare

        settings = {
            "objective": self.objective,
            "sampler": self.sampler,
            "trials": self.trials,
            "seed": self.seed,
            "space": self.space,
            "start": self.start,
        }
        return lambda progress, cancel: compare(engine, **settings, progress=progress, cancel=cancel)


JobRequest = ProxyJob | CheckpointsJob | SearchJob | RecycleJob


REQUESTS = {r.kind: r for r in (ProxyJob, CheckpointsJob, SearchJob, RecycleJob)}


RESUMABLE = tuple(REQUESTS)


def request(kind: str, spec: dict, lab) -> JobRequest:
    """The typed request a recorded job's ``kind`` and JSON ``spec`` describe, over ``lab`` (a proxy job's
    mixtures are over its experts); KeyError or TypeError for a spec that lacks what the kind needs,
    MixlabError for a kind that cannot run again."""
    if kind not in REQUESTS:
        raise MixlabError(f"a {kind!r} job cannot be resumed; run it again (jobs of kinds {', '.join(RESUMABLE)} can)")
    return REQUESTS[kind].from_spec(spec, lab)
