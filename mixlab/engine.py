"""The engine: one lab's experts held as task vectors, one resident model, and every score looked up in
the cache before it is computed.

A proxy score is f(θ_0 + merge(τ, w)): the resident model (:mod:`mixlab.resident`) takes the merge in
place, then the benchmark runs. Checkpoints (experts themselves, models truly trained on a mixture, the
base) are evaluated the same way, as a one-tensor-set "merge". Cache keys (:mod:`mixlab.keys`) are built
from the bytes that were loaded: when a lab's files change on disk the engine reloads them, and a score
whose sources changed while it was computed is never stored.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from mixlab.analysis import results_table
from mixlab.errors import CacheError, EvaluationError, ManifestError
from mixlab.evaluate import (
    BUILTIN,
    EvalResult,
    context_length,
    has_images,
    pick_device,
    prepare,
    run_benchmark,
    run_benchmark_grouped,
)
from mixlab.experts import Checkpoint, TaskVector
from mixlab.keys import CacheKey
from mixlab.lab import LM_EVAL, BenchmarkSpec, Lab
from mixlab.lazy import torch
from mixlab.merge import MergeSpec, get_method, save_lora_merge, save_merged
from mixlab.merge.methods import is_excluded
from mixlab.presets import model_type, preset_patterns
from mixlab.resident import ResidentModel
from mixlab.simplex import Mixture
from mixlab.sources import BenchmarkData, LabSources
from mixlab.store import Evaluation, Store

CACHE_DIR = ".mixlab"
CACHE_FILE = "evaluations.sqlite"
EXPORT_FILE = "evaluations.jsonl"  # committed with a lab; seeds a fresh cache
# On a CPU, batching mixtures beats merging each one up to about this many examples (bench/grid.py at
# batch 512, batched vs per-mixture: generation 4.9× at 16, 1.6× at 64, 1.2× at 128, 1.0× at 200;
# scoring 1.6× at 16, 1.4× at 32, 0.95× at 64): greedy generation (many small passes) benefits longer.
SMALL_BENCHMARK = {"exact_match": 128, "lm_loss": 32, "choice": 32}
# progress(done, total, message)
Progress = Callable[[int, int, str], None]


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
    except ManifestError as e:
        seed, notices = None, [f"{e}; its scores were not imported."]
    try:
        store = Store(path if chosen else lab.root / path, seed_from=seed, root=None if chosen else lab.root)
    except CacheError as e:
        store = Store(":memory:", seed_from=seed)
        notices.insert(0, f"{e} Scores computed now are kept in memory only, not saved.")
    store.notices[:0] = notices
    return store


class Engine:
    def __init__(self, lab: Lab, store: Store | None = None, device: str | None = None, batch_size: int | None = None):
        self.lab = lab
        self.store = store if store is not None else open_store(lab)
        self._device = pick_device(device) if device else None  # a device asked for is checked now
        self._batch_size = batch_size
        self._lock = threading.RLock()  # one evaluation at a time per engine (the UI's worker and page)
        self.sources = LabSources(lab)

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

    def warnings(self) -> list[str]:
        """Doubts about the lab that do not stop it: experts that may not be fine-tunes of this base,
        experts with identical content, a preset that keeps nothing, and why the cache is not saving (if it
        is not). Loads nothing."""
        preset = self.__dict__["_exclusions"][1] if "_exclusions" in self.__dict__ else []
        return self.sources.warnings() + preset + list(self.store.notices)

    def mixture(self, weights: Sequence[float], normalize: bool = False) -> Mixture:
        return Mixture.of(self.names, weights, normalize=normalize)

    def resolve_method(self, method: str | None = None, params: dict | None = None) -> tuple[str, dict]:
        """(method, validated params): the lab's ``[merge]`` method when none is given, and its
        ``[merge].params`` wherever a parameter of that method is not given."""
        defaults = self.lab.manifest.merge
        method = method or defaults.method
        given = {**(defaults.params if method == defaults.method else {}), **(params or {})}
        return method, get_method(method).resolve(given)

    def spec(self, mixture: Mixture, method: str | None = None, params: dict | None = None) -> MergeSpec:
        method, resolved = self.resolve_method(method, params)
        return MergeSpec(method, tuple(mixture.weights), resolved, self.excluded)

    # --- benchmarks ---------------------------------------------------------------------------------
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

    # --- scores -------------------------------------------------------------------------------------
    # keys are built from the BenchmarkData that is then scored: one read of the data per score
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
            **row,
        )

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
        """Score one model, ``target``, on ``benchmarks``: cached rows first; each new score is stored as it
        is made, unless a source (lab files, the target's checkpoint, the data) changed while it was computed."""
        out = []
        total = total or len(benchmarks)
        for i, b in enumerate(benchmarks):
            bench = self._bench(b)
            key = target.key(self, bench)
            hit = None if refresh else self.store.get(key.digest)
            if hit is not None:
                hit = self._as_here(hit, row)
            if hit is None:
                with self._lock:
                    target.load(self.resident)

                    def step(d, n, _b=b, _i=i):
                        if progress:
                            progress(done + _i, total, f"{row['label']} · {_b.name}: {d}/{n} examples")

                    r = run_benchmark(
                        self.model,
                        self.tokenizer,
                        b,
                        bench.examples,
                        self.device,
                        batch_size=self.batch_size,
                        progress=step,
                        cancel=cancel,
                        items=self._items(b, bench),
                        plugin_dirs=self.lab.plugin_dirs,
                        harness=self._harness(b),
                        processor=self.resident.processor if has_images(bench.examples) else None,
                    )
                self._check_unchanged(b, bench, target.checkpoint)
                hit = self._evaluation(key, b, r, str(self.device), **row)
                self.store.put(hit)
            out.append(hit)
            if progress:
                progress(done + i + 1, total, f"{row['label']} · {b.name}")
        return out

    def proxy(
        self,
        mixture: Mixture,
        method: str | None = None,
        params: dict | None = None,
        benchmarks: Sequence[str] | None = None,
        *,
        refresh: bool = False,
        progress: Progress | None = None,
        cancel=None,
    ) -> list[Evaluation]:
        """Proxy scores of a mixture: evaluate θ_0 + merge(τ, w) on each benchmark (cache first)."""
        self.refresh()
        spec = self.spec(mixture, method, params)
        return self._proxy(mixture, spec, self.benchmarks(benchmarks), refresh, progress, cancel)

    def _proxy(self, mixture: Mixture, spec: MergeSpec, benchmarks, refresh, progress, cancel, done=0, total=None):
        """:meth:`proxy` with the merge already resolved (a sweep resolves its method once)."""
        row = {
            "kind": "proxy",
            "label": mixture.label(),
            "method": spec.method,
            "params": spec.params,
            "weights": mixture.as_dict(),
        }
        return self._score(MergedModel(spec), benchmarks, row, refresh, progress, cancel, done, total)

    def choose_path(self, method: str, bench: BenchmarkSpec, n_mixtures: int) -> str:
        """The cost rule. The batched LoRA path pays off where each mixture's own batches would be
        small: small benchmarks, or a GPU. On a CPU, once a benchmark fills its own batches, the batched
        layers' extra low-rank work costs more than the in-memory merge it saves (bench/grid.py; the
        README has the table)."""
        if n_mixtures < 2 or bench.evaluator not in BUILTIN or not get_method(method).linear_in_task_vectors:
            return "materialize"
        if has_images(
            self._bench(bench).examples
        ):  # image rows are generated through the processor, one merge at a time
            return "materialize"
        from mixlab.batched import supports_batched  # defines nn.Module subclasses: imports torch

        if supports_batched(self.experts) is not None:
            return "materialize"
        small = len(self._bench(bench).examples) <= SMALL_BENCHMARK[bench.evaluator]
        return "batched" if (self.device.type != "cpu" or small) else "materialize"

    def image_answers(self, mixture: Mixture, benchmark: str, n: int = 6, method=None, params=None) -> list[dict]:
        """The merge's own answers to the first ``n`` rows of an image benchmark (the dashboard's strip of
        examples): each row's image path, prompt, expected answer and the merged model's output."""
        from mixlab.evaluate import Batches, image_answers

        b = self.lab.benchmark(benchmark)
        rows = self._bench(b).examples[:n]
        if not has_images(rows):
            raise EvaluationError(f"benchmark {benchmark!r} has no images")
        with self._lock:
            self.resident.load_merge(self.spec(mixture, method, params))
            outs = image_answers(self.model, self.resident.processor, rows, b, self.device, Batches(n, None, None))
        return [{**ex, "output": o} for ex, o in zip(self.image_examples(benchmark, n), outs)]

    def image_examples(self, benchmark: str, n: int = 6) -> list[dict]:
        """The first ``n`` rows of an image benchmark: image path (inside the lab), prompt, answer."""
        rows = self._bench(self.lab.benchmark(benchmark)).examples[:n]
        return [
            {"image": r["_image"], "prompt": r["prompt"], "answer": str(r["answer"])} for r in rows if "_image" in r
        ]

    def image_benchmarks(self) -> list[str]:
        """The lab's benchmarks whose rows carry images."""
        return [b.name for b in self.lab.benchmarks if has_images(self._bench(b).examples)]

    def excluded_tensors(self) -> list[tuple[str, int]]:
        """The base's tensors every merge keeps at the base (the preset's and ``exclude``'s), with their sizes."""
        return [(k, math.prod(self.base.shape(k))) for k in self.base.keys() if is_excluded(k, self.excluded)]

    def lookup(self, mixture: Mixture, method=None, params=None, benchmarks=None) -> list[Evaluation] | None:
        """The cached proxy scores of ``mixture`` on ``benchmarks`` (all of them), or None: computes nothing."""
        spec = self.spec(mixture, method, params)
        keys = [self._merge_key(spec, self._bench(b)).digest for b in self.benchmarks(benchmarks)]
        hits = self.store.get_many(keys)
        return [hits[k] for k in keys] if len(hits) == len(keys) else None

    def sweep(
        self,
        mixtures: Sequence[Mixture],
        method: str | None = None,
        params: dict | None = None,
        benchmarks: Sequence[str] | None = None,
        *,
        path: str = "auto",
        progress: Progress | None = None,
        cancel=None,
    ) -> list[Evaluation]:
        """Proxy scores for many mixtures (cached ones cost nothing; each new score is stored as it
        finishes). ``path``: auto (the cost rule of :meth:`choose_path`), materialize (merge each mixture
        into the model), or batched (LoRA experts, linear methods: mixtures share batches, nothing is merged)."""
        if path not in ("auto", "materialize", "batched"):
            raise EvaluationError(f"unknown evaluation path {path!r}; use auto, materialize or batched")
        self.refresh()
        bench = self.benchmarks(benchmarks)
        method, params = self.resolve_method(method, params)  # once for the whole sweep
        specs = [MergeSpec(method, tuple(m.weights), params, self.excluded) for m in mixtures]
        total, done = len(mixtures) * len(bench), 0
        found: dict[tuple[int, str], Evaluation] = {}
        for b in bench:
            data = self._bench(b)
            keys = [self._merge_key(sp, data) for sp in specs]
            hits = self.store.get_many([k.digest for k in keys])
            missing = [i for i, k in enumerate(keys) if k.digest not in hits]
            found.update({(i, b.name): hits[k.digest] for i, k in enumerate(keys) if k.digest in hits})
            chosen = path if path != "auto" else (self.choose_path(specs[0].method, b, len(missing)) if specs else "")
            if chosen == "batched" and missing and has_images(data.examples):
                raise EvaluationError(f"benchmark {b.name!r} has images: the batched path is for text; use materialize")
            if chosen == "batched" and missing:
                for i, ev in self._batched(
                    b, data, [(i, mixtures[i], specs[i], keys[i]) for i in missing], progress, cancel, done, total
                ):
                    found[(i, b.name)] = ev
                    done += 1
            for i in missing if chosen != "batched" else []:
                self.refresh()  # as proxy() does before each mixture: lab files changed mid-sweep are reloaded
                spec = dataclasses.replace(specs[i], exclude=self.excluded)  # the method stays resolved
                (ev,) = self._proxy(mixtures[i], spec, [b], False, progress, cancel, done, total)
                found[(i, b.name)] = ev
                done += 1
            done += len(mixtures) - len(missing)
            if progress:
                progress(done, total, f"{b.name} done")
        return [found[(i, b.name)] for i in range(len(mixtures)) for b in bench]

    def _batched(
        self, b: BenchmarkSpec, bench: BenchmarkData, todo: list[tuple], progress, cancel, done: int, total: int
    ):
        """Yield (index, evaluation) for mixtures scored on the batched LoRA path, a chunk of mixtures
        at a time (about one batch of rows), each chunk stored as soon as it is scored. ``bench``: the
        data the ``todo`` keys were built from."""
        method = get_method(todo[0][2].method)
        if not method.linear_in_task_vectors:
            raise EvaluationError(f"the batched path merges linearly; method {method.name!r} needs path='materialize'")
        from mixlab.batched import BatchedLora, supports_batched

        why = supports_batched(self.experts)
        if why:
            raise EvaluationError(f"the batched path does not apply to this lab: {why}")
        rows_per_mixture = max(1, len(self._items(b, bench) or bench.examples))
        chunk = max(1, self.batch_size // rows_per_mixture)
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            coef = torch.tensor(
                [method.coefficients(sp.weights, sp.params) for _, _, sp, _ in part], dtype=torch.float32
            ).to(self.device)  # (M, K): c = λ·w per mixture

            def step(d, n, _start=start, _m=len(part)):
                if progress:
                    progress(done + _start + d * _m // max(n, 1), total, f"{b.name}: {d}/{n} rows (batched)")

            with self._lock:
                self.resident.load_base()
                with BatchedLora(self.model, self.experts, self.device) as lora:
                    results = run_benchmark_grouped(
                        self.model,
                        self.tokenizer,
                        b,
                        bench.examples,
                        self.device,
                        len(part),
                        lambda g, _coef=coef: lora.state.set(_coef[g]),
                        batch_size=self.batch_size,
                        progress=step,
                        cancel=cancel,
                        items=self._items(b, bench),
                    )
            self._check_unchanged(b, bench)
            evals = [
                self._evaluation(
                    key,
                    b,
                    r,
                    f"{self.device} (batched)",
                    kind="proxy",
                    label=m.label(),
                    method=sp.method,
                    params=sp.params,
                    weights=m.as_dict(),
                )
                for (_, m, sp, key), r in zip(part, results)
            ]
            self.store.put(evals)
            yield from ((i, ev) for (i, *_), ev in zip(part, evals))

    def _checkpoint(
        self,
        kind: str,
        tv: TaskVector,
        weights: dict | None,
        benchmarks,
        refresh,
        progress,
        cancel,
        label=None,
        **extra,
    ):
        row = {"kind": kind, "label": label or tv.name, "method": None, "params": None, "weights": weights} | extra
        return self._score(CheckpointModel(tv), self.benchmarks(benchmarks), row, refresh, progress, cancel)

    def expert_scores(self, benchmarks=None, *, refresh=False, progress=None, cancel=None) -> list[Evaluation]:
        """Each expert on its own (the expert checkpoint itself, not a merge)."""
        self.refresh()
        out = []
        for tv in self.experts:  # already loaded: an expert is its own checkpoint
            onehot = {n: float(n == tv.name) for n in self.names}
            out += self._checkpoint("expert", tv, onehot, benchmarks, refresh, progress, cancel)
        return out

    def true_scores(self, benchmarks=None, *, refresh=False, progress=None, cancel=None) -> list[Evaluation]:
        """Models truly trained on mixtures: evaluated from their checkpoints, or taken from the manifest."""
        self.refresh()
        out = []
        for label, r, weights, tv in self.sources.true_checkpoints():
            out += self._checkpoint("true", tv, weights, benchmarks, refresh, progress, cancel, label, replicate=r)
        return out + self._manifest_scores(benchmarks)

    def _manifest_scores(self, benchmarks=None) -> list[Evaluation]:
        """True-mixture scores written in lab.toml (no checkpoint to evaluate)."""
        out = []
        for t in self.lab.manifest.true_mixtures:
            if t.scores is None:
                continue
            label = self.lab.true_mixture_name(t)
            weights = self.lab.true_mixture_weights(t).as_dict()
            for b in self.benchmarks(benchmarks):
                if b.name in t.scores:
                    out.append(
                        Evaluation(
                            key=f"manifest:{label}:{b.name}",
                            lab=self.lab.name,
                            kind="true",
                            label=label,
                            models=self.models_fp,
                            benchmark=b.name,
                            metric="score",
                            score=t.scores[b.name],
                            higher_is_better=b.higher_is_better,
                            n=0,
                            device="manifest",
                            seconds=0.0,
                            weights=weights,
                        )
                    )
        return out

    def base_scores(self, benchmarks=None, *, refresh=False, progress=None, cancel=None) -> list[Evaluation]:
        self.refresh()
        row = {"kind": "base", "label": "base", "method": None, "params": None, "weights": None}
        return self._score(CheckpointModel(None), self.benchmarks(benchmarks), row, refresh, progress, cancel)

    def checkpoint_scores(self, benchmarks=None, *, refresh=False, progress=None, cancel=None) -> list[Evaluation]:
        """Every checkpoint of the lab on every benchmark: the base, each expert, each true mixture (what
        ``sweep --checkpoints`` and the Lab page's button run); cached scores are reused."""
        return [
            *self.base_scores(benchmarks, refresh=refresh, progress=progress, cancel=cancel),
            *self.expert_scores(benchmarks, refresh=refresh, progress=progress, cancel=cancel),
            *self.true_scores(benchmarks, refresh=refresh, progress=progress, cancel=cancel),
        ]

    def unscored(self) -> dict[str, int]:
        """How many checkpoints of each kind (base, expert, true) lack a cached score on some benchmark;
        computes nothing."""
        n_bench = len(self.benchmarks())
        out = {}
        for kind, total in (
            ("base", 1),
            ("expert", len(self.names)),
            ("true", sum(len(t.checkpoints) for t in self.lab.manifest.true_mixtures)),
        ):
            counts: dict[tuple, int] = {}
            for e in self.cached(kind):
                if e.device != "manifest":
                    counts[e.label, e.replicate] = counts.get((e.label, e.replicate), 0) + 1
            out[kind] = total - sum(1 for c in counts.values() if c >= n_bench)
        return out

    # --- tables -------------------------------------------------------------------------------------
    @property
    def true_fingerprints(self) -> dict[tuple[str, int], str]:
        """Content fingerprint of each true-mixture checkpoint ((label, replicate) → fingerprint), current."""
        return self.sources.true_fingerprints()

    def cached(self, kind: str) -> list[Evaluation]:
        """Cached scores of one kind (base, expert, true, proxy) of this lab; computes nothing."""
        self.refresh()
        if kind == "proxy":  # the lab's benchmarks only: a search's dev-data and subset scores stay in its study
            names = {b.name for b in self.lab.benchmarks}
            return [e for e in self.store.evaluations(models=self.models_fp, kind="proxy") if e.benchmark in names]
        named = {  # (fingerprint, label, weights, replicate): how this lab names each checkpoint; a checkpoint
            # listed twice (as two mixtures' replicates) is named twice
            "base": lambda: [(None, "base", None, None)],
            "expert": lambda: [
                (fp, name, {n: float(n == name) for n in self.names}, None)
                for name, fp in zip(self.names, self.sources.expert_fps)
            ],
            "true": lambda: [
                (fp, label, self.lab.true_mixture_weights(self._true_spec(label)).as_dict(), r)
                for (label, r), fp in self.true_fingerprints.items()
            ],
        }[kind]()
        data = [self._bench(b) for b in self.benchmarks()]
        keys = [(self._checkpoint_key(fp, d).digest, row) for fp, *row in named for d in data]
        hits = self.store.get_many(list(dict.fromkeys(k for k, _ in keys)))
        out = [
            self._as_here(
                hits[k],
                {"kind": kind, "label": label, "weights": weights, "method": None, "params": None, "replicate": r},
            )
            for k, (label, weights, r) in keys
            if k in hits
        ]
        return out + (self._manifest_scores() if kind == "true" else [])

    def _true_spec(self, label: str):
        return next(t for t in self.lab.manifest.true_mixtures if self.lab.true_mixture_name(t) == label)

    def _as_here(self, hit: Evaluation, row: dict) -> Evaluation:
        """A cached score as this lab names it. A checkpoint's key is its content and the benchmark, so
        another lab that holds the same checkpoint (the recycling lab holds demo-k3's true mixtures as
        experts) stored it under its own kind, label and weights."""
        return dataclasses.replace(hit, lab=self.lab.name, models=self.models_fp, **row)

    def results(self, method: str | None = None, params: dict | None = None) -> pd.DataFrame:
        """Every cached score of this lab as one tidy table (see :func:`mixlab.analysis.results_table`);
        proxy rows only for ``method``/``params`` when given."""
        want = None if method is None else self.resolve_method(method, params)
        rows = [
            e
            for kind in ("base", "expert", "true", "proxy")
            for e in self.cached(kind)
            if kind != "proxy" or want is None or (e.method, e.params) == want
        ]
        return results_table(rows, self.names)

    # --- export -------------------------------------------------------------------------------------
    def export(
        self,
        mixture: Mixture,
        out: Path,
        method: str | None = None,
        params: dict | None = None,
        *,
        adapter: bool = False,
        overwrite: bool = False,
        progress: Callable[[int, int], None] | None = None,
        in_lab: bool = False,
    ) -> Path:
        """Write the merge as a Hugging Face model folder, or (``adapter``) a PEFT adapter. ``overwrite``
        replaces only an earlier mixlab export (see :mod:`mixlab.merge.output`). ``in_lab``: ``out`` is one
        of the lab's exports (:meth:`Lab.export_path`), checked again as it is written to stay inside."""
        self.refresh()
        spec = self.spec(mixture, method, params)
        from mixlab import __version__

        scores = []
        for b in self.lab.benchmarks:
            hit = self.store.get(self._merge_key(spec, self._bench(b)).digest)
            if hit is not None:
                scores.append(
                    {"benchmark": b.name, "metric": hit.metric, "score": hit.score, "n": hit.n}
                    | {"higher_is_better": b.higher_is_better}
                )
        prov = {
            "lab": self.lab.name,
            "experts": self.names,
            "weights": mixture.as_dict(),
            "method": spec.method,
            "params": spec.params,
            "exclude": list(spec.exclude),
            "base": {
                "path": self.lab.manifest.base,
                "fingerprint": self.sources.base_fp,
                "name_or_path": self.base.name_or_path,  # a Hub id here becomes the card's base_model
            },
            "expert_info": [{"name": tv.name, "kind": tv.kind, "fingerprint": tv.fingerprint} for tv in self.experts],
            "scores": scores,
            "mixlab": __version__,
        }
        within = self.lab.exports if in_lab else None
        if adapter:
            return save_lora_merge(self.experts, spec, out, overwrite=overwrite, provenance=prov, within=within)
        return save_merged(
            self.base, self.experts, spec, out, overwrite=overwrite, progress=progress, provenance=prov, within=within
        )
