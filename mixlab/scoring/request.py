"""The one request value: a :class:`Method` (a merge method's name and its params, resolved once) and a
frozen :class:`ProxyRequest` (mixtures, method, benchmarks, split, path). The dashboard's pages, the CLI, a
recorded job, a Ray actor and a search trial all build this value and pass it on; nothing on the way to the
merge kernel resolves the method again or re-reads the weights from a list.

A request's JSON form (:meth:`ProxyRequest.to_spec`) is what a job record keeps: the mixtures as weight lists
in the lab's expert order (a record names its lab, whose manifest gives the names back), and the fields a
record of an earlier version lacks are written only when they differ from their default, so the records and
dedup keys of earlier versions read the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mixlab.errors import EvaluationError
from mixlab.lab import BenchmarkSpec, Lab
from mixlab.simplex import Mixture

if TYPE_CHECKING:
    from mixlab.merge.methods import MergeMethod, MergeSpec

SPLITS = ("test", "dev")  # test: each benchmark's data (reported); dev: its search_data (what a search optimises)
PATHS = ("auto", "materialize", "batched")


@dataclass(frozen=True)
class Method:
    """A merge method and its params, validated and filled with defaults (:meth:`MergeMethod.resolve`)."""

    name: str
    params: dict = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, params: Mapping[str, object] | None = None) -> Method:
        """Resolve ``params`` for method ``name`` (an unknown name or parameter raises MergeError)."""
        from mixlab.merge.methods import get_method  # torch: imported when a method is first resolved

        return cls(name, get_method(name).resolve(params))

    @classmethod
    def for_lab(cls, lab: Lab, name: str | None = None, params: Mapping[str, object] | None = None) -> Method:
        """The lab's ``[merge]`` method when ``name`` is None, and its ``[merge].params`` wherever a parameter
        of that method is not given."""
        defaults = lab.manifest.merge
        name = name or defaults.method
        return cls.of(name, {**(defaults.params if name == defaults.method else {}), **(params or {})})

    @property
    def kernel(self) -> MergeMethod:
        from mixlab.merge.methods import get_method

        return get_method(self.name)

    @property
    def linear(self) -> bool:
        """θ = θ_0 + Σ c_i τ_i exactly (LoRA stays factored; the batched path applies)."""
        return self.kernel.linear_in_task_vectors

    def spec(self, mixture: Mixture, exclude: Sequence[str] = ()) -> MergeSpec:
        """The merge of ``mixture`` by this method, carrying the mixture and the looked-up kernel."""
        from mixlab.merge.methods import MergeSpec

        return MergeSpec(self.name, mixture, self.params, tuple(exclude), kernel=self.kernel)

    def pair(self) -> tuple[str, dict]:
        """(name, params): how a cached score's row and a study's description name the method."""
        return self.name, self.params


def split_benchmark(lab: Lab, spec: BenchmarkSpec, split: str = "test", limit: int | None = None) -> BenchmarkSpec:
    """The benchmark as a request scores it. ``test``: as declared. ``dev``: on its ``search_data``, named
    apart (``rev@dev``) so its scores never mix with the reported ones; a benchmark without search_data is
    scored on its own data named ``rev@test`` (a search allows that only with ``allow_test``, and says so).
    ``limit``: its first ``limit`` examples, named ``rev@dev:50``. The names are part of the cache key: these
    are the names scores were stored under, so they must not change."""
    if split not in SPLITS:
        raise EvaluationError(f"unknown split {split!r}; use {' or '.join(SPLITS)}")
    if split == "test" and limit is None:
        return spec
    if split == "test":
        update = {"name": spec.name}
    elif spec.search_data is None:
        update = {"name": f"{spec.name}@test"}
    else:
        lab.resolve(spec.search_data, f"benchmark {spec.name!r} search_data", want_file=True)
        update = {"name": f"{spec.name}@dev", "data": spec.search_data}
    if limit is not None:
        update |= {"name": f"{update['name']}:{limit}", "limit": limit}
    return spec.model_copy(update=update)


def declared_split(name: str) -> tuple[str, str, int | None]:
    """A stored score's benchmark name as (declared benchmark, split, limit): :func:`split_benchmark` undone.
    ``rev`` → (rev, test, None), ``rev@dev:50`` → (rev, dev, 50); ``rev@test`` is the dev split of a benchmark
    without search_data (scored on its own data)."""
    head, _, n = name.partition(":")
    bench, _, split = head.partition("@")
    return bench, "dev" if split else "test", int(n) if n else None


@dataclass(frozen=True)
class ProxyRequest:
    """Proxy scores to compute or read: every mixture merged by ``method`` and scored on ``benchmarks``
    (None: every benchmark of the lab) on their ``split`` (``limit``: the first examples only), by the
    evaluation ``path`` (auto: the cost rule, materialize, batched)."""

    mixtures: tuple[Mixture, ...]
    method: Method
    benchmarks: tuple[str | BenchmarkSpec, ...] | None = None  # a spec passes through as given
    split: str = "test"
    limit: int | None = None
    path: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mixtures", tuple(self.mixtures))
        if self.benchmarks is not None:
            object.__setattr__(self, "benchmarks", tuple(self.benchmarks))
        if self.split not in SPLITS:
            raise EvaluationError(f"unknown split {self.split!r}; use {' or '.join(SPLITS)}")
        if self.path not in PATHS:
            raise EvaluationError(f"unknown evaluation path {self.path!r}; use auto, materialize or batched")
        if self.limit is not None and self.limit < 1:
            raise EvaluationError(f"limit must be a positive number of examples, got {self.limit}")
        names = {m.names for m in self.mixtures}
        if len(names) > 1:
            raise EvaluationError(f"a request's mixtures name different experts: {sorted(names)}")

    def specs(self, lab: Lab) -> list[BenchmarkSpec]:
        """The benchmarks this request scores, as scored (renamed for the dev split or a limit); a
        :class:`BenchmarkSpec` given in ``benchmarks`` is scored as it is."""
        if not self.benchmarks:
            return [split_benchmark(lab, b, self.split, self.limit) for b in lab.benchmarks]
        return [
            b if isinstance(b, BenchmarkSpec) else split_benchmark(lab, lab.benchmark(b), self.split, self.limit)
            for b in self.benchmarks
        ]

    def merges(self, exclude: Sequence[str]) -> list[MergeSpec]:
        """One merge per mixture, in order."""
        return [self.method.spec(m, exclude) for m in self.mixtures]

    def only(self, indices: Sequence[int]) -> ProxyRequest:
        """The same request for some of its mixtures (a chunk sent to a worker)."""
        return ProxyRequest(
            tuple(self.mixtures[i] for i in indices), self.method, self.benchmarks, self.split, self.limit, self.path
        )

    def to_spec(self) -> dict:
        """Its JSON form (a job record's spec): see the module docstring."""
        if any(isinstance(b, BenchmarkSpec) for b in self.benchmarks or ()):
            raise EvaluationError("a request that names benchmarks by spec cannot be recorded; name them")
        if any(m.groups is not None for m in self.mixtures):  # a record keeps one weight list per mixture
            raise EvaluationError("a merge with per-layer-group weights cannot be recorded as a proxy job")
        spec = {
            "mixtures": [list(m.weights) for m in self.mixtures],
            "method": self.method.name,
            "params": self.method.params,
            "benchmarks": None if self.benchmarks is None else list(self.benchmarks),
        }
        for name, default in (("split", "test"), ("limit", None), ("path", "auto")):
            if getattr(self, name) != default:
                spec[name] = getattr(self, name)
        return spec

    @classmethod
    def from_spec(cls, spec: Mapping, lab: Lab) -> ProxyRequest:
        """A request from its JSON form, its mixtures over ``lab``'s experts (in order); the method is
        resolved as :meth:`Method.for_lab` does (a record is read from disk: validated at the boundary).
        KeyError or TypeError for a spec that lacks a field."""
        if not isinstance(spec["mixtures"], list):
            raise TypeError(f"a proxy request needs a list of mixtures, got {spec['mixtures']!r}")
        return cls(
            tuple(Mixture.of(lab.expert_names, w, normalize=True) for w in spec["mixtures"]),
            Method.for_lab(lab, spec["method"], spec.get("params")),
            spec.get("benchmarks"),
            spec.get("split", "test"),
            spec.get("limit"),
            spec.get("path", "auto"),
        )
