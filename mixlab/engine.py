"""The engine is the lab session: what is loaded (the lab's sources, the resident model), the cache keys,
the merge method resolved (:class:`~mixlab.scoring.request.Method`), and the cached-first scoring loop
over a typed model/key pair (:class:`MergedModel`, :class:`CheckpointModel`).

A proxy score is f(θ_0 + merge(τ, w)): the resident model (:mod:`mixlab.resident`) takes the merge in
place, then the benchmark runs. Checkpoints (experts themselves, models truly trained on a mixture, the
base) are evaluated the same way, as a one-tensor-set "merge". Cache keys (:mod:`mixlab.keys`) are built
from the bytes that were loaded: when a lab's files change on disk the engine reloads them, and a score
whose sources changed while it was computed is never stored.

The use cases live in :mod:`mixlab.scoring` (proxy sweeps and the cost rule, checkpoint scores, the read
side, export, the image strip) as functions of the engine; the engine keeps only the library's calls the
README documents (``proxy``, ``sweep``, ``results``, ``export``), each of which builds a request and runs one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from collections.abc import Callable, Hashable, Sequence
from functools import cached_property
from pathlib import Path

import pandas as pd

from mixlab.checkpoint import Checkpoint
from mixlab.errors import CacheError, EvaluationError, ManifestError
from mixlab.evaluate import BUILTIN, EvalResult, context_length, has_images, pick_device, prepare, run_benchmark
from mixlab.evaluate.builtin import keeps_last_logits
from mixlab.experts import TaskVector
from mixlab.keys import CacheKey
from mixlab.lab import BenchmarkSpec, Lab
from mixlab.manifest import LM_EVAL
from mixlab.merge import MergeSpec, is_excluded
from mixlab.presets import model_type, preset_patterns
from mixlab.resident import ResidentModel
from mixlab.scoring import cached as cached_scores
from mixlab.scoring import export, proxy
from mixlab.scoring.proxy import SMALL_BENCHMARK  # noqa: F401 - its home moved; kept importable from here
from mixlab.scoring.request import Method, ProxyRequest
from mixlab.scoring.targets import CheckpointModel, MergedModel
from mixlab.simplex import Mixture
from mixlab.sources import BenchmarkData, LabSources
from mixlab.store import Evaluation, Store
from mixlab.tables import of_method
from mixlab.values import VALUES_FILE

CACHE_DIR = ".mixlab"
CACHE_FILE = "evaluations.sqlite"
EXPORT_FILE = "evaluations.jsonl"  # committed with a lab; seeds a fresh cache
VIEWS = 64  # read views an engine keeps (Engine.read_view): a page's few, per benchmark and method shown
# progress(done, total, message)
Progress = Callable[[int, int, str], None]


def open_store(lab: Lab, path: str | Path | None = None) -> Store:
    """The lab's cache: ``path``, else $MIXLAB_CACHE, else ``<lab>/.mixlab/evaluations.sqlite``, seeded
    from the lab's committed ``evaluations.jsonl`` when created. Where that file cannot be used (a
    read-only lab, a corrupt cache) the scores live in memory for this process, with a notice saying why:
    the lab still opens and a corrupt file is never written to."""
    chosen = path or os.environ.get("MIXLAB_CACHE")  # a path the user gave: theirs to place anywhere
    path = Path(chosen) if chosen else Path(CACHE_DIR) / CACHE_FILE
    notices = []
    try:
        seed = lab.inside(EXPORT_FILE, "the lab's evaluations export")
        values = lab.inside(VALUES_FILE, "the lab's per-example values export")
    except ManifestError as e:
        seed, values, notices = None, None, [f"{e}; its scores were not imported."]
    try:
        store = Store(
            path if chosen else lab.root / path, seed_from=seed, values_from=values, root=None if chosen else lab.root
        )
    except CacheError as e:
        store = Store(":memory:", seed_from=seed, values_from=values)
        notices.insert(0, f"{e} Scores computed now are kept in memory only, not saved.")
    store.notices[:0] = notices
    return store


class Engine:
    """One lab's session: its sources and resident model, its cache, and the scoring loop."""

    def __init__(self, lab: Lab, store: Store | None = None, device: str | None = None, batch_size: int | None = None):
        self.lab = lab
        self.store = store if store is not None else open_store(lab)
        self._device = pick_device(device) if device else None  # a device asked for is checked now
        self._batch_size = batch_size
        self._lock = threading.RLock()  # one evaluation at a time per engine (the UI's worker and page)
        self.sources = LabSources(lab)
        self._views: dict = {}  # name → (read key, value): see read_view
        self._views_lock = threading.Lock()  # (not _lock: a page must not wait for an evaluation)

    @property
    def device(self):
        """Where evaluations run (a torch.device): the one asked for, else cuda → mps → cpu, picked when first
        asked (importing torch: a page that only reads cached scores never asks)."""
        if self._device is None:
            self._device = pick_device(None)
        return self._device

    def device_name(self) -> str | None:
        """The device's name if it is known without importing torch, else None (picked at the first evaluation)."""
        return None if self._device is None else str(self._device)

    # --- what the lab is made of (reloaded when its files change: mixlab.sources) -------------------
    @property
    def base(self) -> Checkpoint:
        return self.sources.base

    @property
    def experts(self) -> list[TaskVector]:
        return self.sources.experts

    @property
    def models_fp(self) -> str:
        return self.sources.models_fp

    @property
    def true_fingerprints(self) -> dict[tuple[str, int], str]:
        """Content fingerprint of each true-mixture checkpoint ((label, replicate) → fingerprint), current."""
        return self.sources.true_fingerprints()

    def refresh(self) -> bool:
        """Reload the base and experts if any of their files changed on disk; True if it did."""
        with self._lock:
            if not self.sources.reload():
                return False
            self.__dict__.pop("resident", None)
            self.__dict__.pop("_exclusions", None)  # the base's class may have changed
        return True

    def _check_unchanged(self, b: BenchmarkSpec, scored: BenchmarkData, tv: TaskVector | None = None) -> None:
        """Raise (and reload) if a source of a score just computed changed while it was computed."""
        if not self.sources.unchanged(b, scored, tv):
            self.refresh()
            raise EvaluationError(
                f"lab {self.lab.name!r}: a file changed on disk during the evaluation; the score was not "
                "stored (it may belong to either version). Run it again."
            )

    @cached_property
    def resident(self) -> ResidentModel:
        return ResidentModel(self.base, self.experts, self.excluded, self.device, self._batch_size)

    @property
    def model(self):
        return self.resident.model

    @property
    def tokenizer(self):
        return self.resident.tokenizer

    @property
    def batch_size(self) -> int:
        return self.resident.batch_size

    @property
    def names(self) -> list[str]:
        return self.lab.expert_names

    @cached_property
    def _exclusions(self) -> tuple[tuple[str, ...], list[str]]:
        merge = self.lab.manifest.merge
        if merge.preset is None:
            return merge.exclude, []
        patterns, warnings = preset_patterns(merge.preset, model_type(self.base.folder), self.base.keys())
        return patterns + merge.exclude, warnings

    @property
    def excluded(self) -> tuple[str, ...]:
        """Every glob kept at the base by every merge: the preset's for the base's model class
        (:func:`mixlab.presets.preset_patterns`), then ``[merge].exclude``."""
        return self._exclusions[0]

    def excluded_tensors(self) -> list[tuple[str, int]]:
        """The base's tensors every merge keeps at the base (:attr:`excluded`), with their sizes."""
        return [(k, math.prod(self.base.shape(k))) for k in self.base.keys() if is_excluded(k, self.excluded)]

    def warnings(self) -> list[str]:
        """Doubts about the lab that do not stop it: experts that may not be fine-tunes of this base,
        experts with identical content, a preset that keeps nothing, and why the cache is not saving (if it
        is not). Loads nothing."""
        preset = self.__dict__["_exclusions"][1] if "_exclusions" in self.__dict__ else []
        return self.sources.warnings() + preset + list(self.store.notices)

    # --- the request: mixtures, the method resolved once, benchmarks ---------------------------------
    def mixture(self, weights: Sequence[float], normalize: bool = False) -> Mixture:
        return Mixture.of(self.names, weights, normalize=normalize)

    def method(self, method: str | Method | None = None, params: dict | None = None) -> Method:
        """The merge method resolved for this lab (:meth:`Method.for_lab`); a :class:`Method` passes through."""
        if isinstance(method, Method):
            return method
        return Method.for_lab(self.lab, method, params)

    def spec(self, mixture: Mixture, method: str | Method | None = None, params: dict | None = None) -> MergeSpec:
        return self.method(method, params).spec(mixture, self.excluded)

    def request(
        self,
        mixtures: Sequence[Mixture],
        method: str | Method | None = None,
        params: dict | None = None,
        benchmarks: Sequence[str | BenchmarkSpec] | None = None,
        *,
        split: str = "test",
        limit: int | None = None,
        path: str = "auto",
    ) -> ProxyRequest:
        """The one value a page, the CLI, a job, a Ray actor and a search trial pass: see
        :class:`~mixlab.scoring.request.ProxyRequest`."""
        names = None if benchmarks is None else tuple(benchmarks)
        return ProxyRequest(tuple(mixtures), self.method(method, params), names or None, split, limit, path)

    def benchmarks(self, names: Sequence[str | BenchmarkSpec] | None = None) -> list[BenchmarkSpec]:
        """The lab's benchmarks by name; a spec passes through (search scores variants: dev data, subsets)."""
        if not names:
            return self.lab.benchmarks
        return [n if isinstance(n, BenchmarkSpec) else self.lab.benchmark(n) for n in names]

    def _bench(self, b: BenchmarkSpec) -> BenchmarkData:
        return self.sources.benchmark(b)

    def _items(self, b: BenchmarkSpec, bench: BenchmarkData) -> list[dict] | None:
        """The benchmark's tokenised work items: the same for every mixture, so made once per data version."""
        if bench.items is None and b.evaluator in BUILTIN:
            bench.items = prepare(self.tokenizer, b, bench.examples, context_length(self.model))
        return bench.items

    def batch_size_for(self, b: BenchmarkSpec, bench: BenchmarkData) -> int:
        """Rows per forward pass on benchmark ``b``: sized for its longest row (prompt and completion, or
        prompt and ``max_new_tokens``) rather than 512 tokens, and for greedy generation, which keeps one
        position's logits where the model allows it, not every position's. At real model shapes on a CPU
        that is the difference between 8 rows a pass and hundreds (Qwen2-0.5B: 151,936-token vocabulary),
        which the batched-mixture path needs to share its passes (README, "At real model shapes"). Plugins,
        lm-eval tasks and image rows keep :attr:`batch_size`."""
        items = self._items(b, bench)
        if not items:
            return self.batch_size
        longest = max(len(it["pair"][0]) + len(it["pair"][1]) if "pair" in it else len(it["ids"]) + b.max_new_tokens
                      for it in items)  # fmt: skip
        last_only = b.evaluator == "exact_match" and keeps_last_logits(self.model)
        return self.resident.batch_size_for(longest, 1 if last_only else longest)

    def _harness(self, b: BenchmarkSpec) -> dict | None:
        """An lm-eval benchmark's files: its data, its task folder, and where datasets may cache (the lab's)."""
        if b.evaluator != LM_EVAL:
            return None
        if str(self.store.path) != ":memory:":
            cache = self.store.beside("hf-datasets")
        else:
            cache = self.lab.inside(Path(CACHE_DIR) / "hf-datasets", "lm-eval's datasets cache")
        return {
            "data": self.lab.resolve(b.data),
            "include": None if b.include_path is None else self.lab.resolve(b.include_path),
            "cache": cache,
            "root": self.lab.root,
        }

    # --- keys and the scoring loop ------------------------------------------------------------------
    # keys are built from the BenchmarkData that is then scored: one read of the data per score
    def _merge_key(self, spec: MergeSpec, bench: BenchmarkData) -> CacheKey:
        return CacheKey.merge(self.sources.base_fp, self.sources.expert_fps, spec, bench.desc)

    def _checkpoint_key(self, fingerprint: str | None, bench: BenchmarkData) -> CacheKey:
        return CacheKey.checkpoint(self.sources.base_fp, fingerprint, bench.desc)

    def _evaluation(self, key: CacheKey, b: BenchmarkSpec, r: EvalResult, device: str, **row) -> Evaluation:
        return Evaluation(
            key=key.digest,
            lab=self.lab.name,
            models=self.models_fp,
            benchmark=b.name,
            metric=r.metric,
            score=r.score,
            higher_is_better=b.higher_is_better,
            n=r.n,
            device=device,
            seconds=r.seconds,
            values=r.values,
            **row,
        )

    def _as_here(self, hit: Evaluation, row: dict) -> Evaluation:
        """A cached score as this lab names it. A checkpoint's key is its content and the benchmark, so
        another lab that holds the same checkpoint (the recycling lab holds demo-k3's true mixtures as
        experts) stored it under its own kind, label and weights."""
        return dataclasses.replace(hit, lab=self.lab.name, models=self.models_fp, **row)

    def _compute(
        self,
        target: MergedModel | CheckpointModel,
        b: BenchmarkSpec,
        bench: BenchmarkData,
        key: CacheKey,
        row: dict,
        progress: Progress | None,
        cancel,
        done: int,
        total: int,
    ) -> Evaluation:
        """Score ``target`` on ``b`` (its data ``bench``, from which ``key`` was built), a score not in the
        cache, and store it unless a source (lab files, the target's checkpoint, the data) changed meanwhile."""
        with self._lock:
            target.load(self.resident)

            def step(d, n):
                if progress:
                    progress(done, total, f"{row['label']} · {b.name}: {d}/{n} examples")

            r = run_benchmark(
                self.model,
                self.tokenizer,
                b,
                bench.examples,
                self.device,
                batch_size=self.batch_size_for(b, bench),
                progress=step,
                cancel=cancel,
                items=self._items(b, bench),
                plugin_dirs=self.lab.plugin_dirs,
                harness=self._harness(b),
                processor=self.resident.processor if has_images(bench.examples) else None,
            )
        self._check_unchanged(b, bench, target.checkpoint)
        ev = self._evaluation(key, b, r, str(self.device), **row)
        self.store.put(ev)
        return ev

    def _score(
        self,
        target: MergedModel | CheckpointModel,
        benchmarks: list[BenchmarkSpec],
        row: dict,
        refresh: bool,
        progress: Progress | None,
        cancel,
        done: int = 0,
        total: int | None = None,
    ) -> list[Evaluation]:
        """Score one model, ``target``, on ``benchmarks``: the cache read once per score, new scores
        computed (:meth:`_compute`) and stored as they are made."""
        out = []
        total = total or len(benchmarks)
        for i, b in enumerate(benchmarks):
            bench = self._bench(b)
            key = target.key(self, bench)
            hit = None if refresh else self.store.get(key.digest)
            if hit is not None:
                hit = self._as_here(hit, row)
            else:
                hit = self._compute(target, b, bench, key, row, progress, cancel, done + i, total)
            out.append(hit)
            if progress:
                progress(done + i + 1, total, f"{row['label']} · {b.name}")
        return out

    # --- the library's calls (the README's): each builds a request and runs its use case ---------------
    # the other use cases are called as mixlab.scoring's functions of the engine: proxy.score / lookup /
    # choose_path, checkpoints.expert_scores / true_scores / base_scores / checkpoint_scores / unscored,
    # cached.cached, images.answers / examples / benchmarks
    def proxy(
        self,
        mixture: Mixture,
        method: str | Method | None = None,
        params: dict | None = None,
        benchmarks: Sequence[str | BenchmarkSpec] | None = None,
        *,
        refresh: bool = False,
        progress: Progress | None = None,
        cancel=None,
    ) -> list[Evaluation]:
        """Proxy scores of a mixture: evaluate θ_0 + merge(τ, w) on each benchmark (cache first)."""
        request = self.request([mixture], method, params, benchmarks, path="materialize")
        return proxy.score(self, request, refresh=refresh, progress=progress, cancel=cancel)

    def sweep(
        self,
        mixtures: Sequence[Mixture],
        method: str | Method | None = None,
        params: dict | None = None,
        benchmarks: Sequence[str | BenchmarkSpec] | None = None,
        *,
        path: str = "auto",
        progress: Progress | None = None,
        cancel=None,
    ) -> list[Evaluation]:
        """Proxy scores for many mixtures (cached ones cost nothing; each new score is stored as it
        finishes). ``path``: auto (the cost rule of :func:`mixlab.scoring.proxy.choose_path`), materialize
        (merge each mixture into the model), or batched (LoRA experts, linear methods: mixtures share
        batches, nothing is merged)."""
        request = self.request(mixtures, method, params, benchmarks, path=path)
        return proxy.score(self, request, progress=progress, cancel=cancel)

    def results(self, method: str | Method | None = None, params: dict | None = None) -> pd.DataFrame:
        """Every cached score of this lab as one tidy table; proxy rows only for ``method``/``params`` when
        given (:func:`mixlab.scoring.cached.results`). Built once per version of what it reads (:meth:`read_view`);
        each call gets its own copy."""
        df = self.read_view("results", lambda: cached_scores.results(self))
        return (
            df.copy() if method is None else of_method(df, *self.method(method, params).pair()).reset_index(drop=True)
        )

    def read_key(self) -> tuple:
        """What the lab's cached scores are read from, as one value that changes whenever they may: the
        store's version (a row added or replaced), the base's and experts' fingerprints, the true-mixture
        checkpoints' (re-read when a file in their folders changed) and the benchmarks' data hashes. Cheap:
        file signatures and one COUNT query, no tensor read."""
        self.refresh()
        return (
            self.store.version(),
            self.models_fp,
            tuple(sorted(self.true_fingerprints.items())),
            tuple(self._bench(b).desc for b in self.lab.benchmarks),
        )

    def has_view(self, name: Hashable, key: tuple) -> bool:
        """Whether :meth:`read_view` holds ``name`` for read key ``key`` (a page asks before a slow first read)."""
        held = self._views.get(name)
        return held is not None and held[0] == key

    def read_view(self, name: Hashable, compute: Callable[[], object], key: tuple | None = None):
        """``compute()`` (a view of the cached scores: the results table, the unscored checkpoints, a page's
        best mixtures), computed once per :meth:`read_key` and shared: a page that reruns on every click does
        not rebuild it. ``key``: the read key if the caller has just taken it (a page takes it once per run).
        The value is shared between callers: treat it as read-only. The :data:`VIEWS` most recently made are
        kept."""
        key = self.read_key() if key is None else key
        held = self._views.get(name)
        if held is None or held[0] != key:
            held = (key, compute())
            with self._views_lock:
                self._views.pop(name, None)
                self._views[name] = held
                while len(self._views) > VIEWS:
                    self._views.pop(next(iter(self._views)))
        return held[1]

    def export(
        self,
        mixture: Mixture,
        out: Path,
        method: str | Method | None = None,
        params: dict | None = None,
        *,
        adapter: bool = False,
        overwrite: bool = False,
        progress: Callable[[int, int], None] | None = None,
        in_lab: bool = False,
    ) -> Path:
        """Write the merge as a model folder or a PEFT adapter: :func:`mixlab.scoring.export.export`."""
        return export.export(
            self,
            mixture,
            out,
            self.method(method, params),
            adapter=adapter,
            overwrite=overwrite,
            progress=progress,
            in_lab=in_lab,
        )
