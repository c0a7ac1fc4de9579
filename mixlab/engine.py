"""The engine: one lab's base model loaded once, its experts held as task vectors, and every score
looked up in the cache before it is computed.

A proxy score is f(θ_0 + merge(τ, w)): the :class:`~mixlab.merge.Merger` writes the merge into the
one in-memory model in place, then the benchmark runs. Checkpoints (experts themselves, models truly
trained on a mixture, the base) are evaluated the same way, as a one-tensor-set "merge".
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property
from pathlib import Path

import pandas as pd
import psutil
import torch

from mixlab.batched import BatchedLora, supports_batched
from mixlab.errors import EvaluationError, ExpertError
from mixlab.evaluate import (
    BUILTIN,
    auto_batch_size,
    default_dtype,
    pick_device,
    prepare,
    quiet_transformers,
    read_examples,
    run_benchmark,
    run_benchmark_grouped,
)
from mixlab.experts import (
    Checkpoint,
    TaskVector,
    file_fingerprint,
    load_base,
    load_task_vector,
)
from mixlab.lab import BenchmarkSpec, Lab
from mixlab.merge import Merger, MergeSpec, get_method, save_lora_merge, save_merged
from mixlab.simplex import ROUND, Mixture
from mixlab.store import Evaluation, Store, cache_key

CACHE_DIR = ".mixlab"
CACHE_FILE = "evaluations.sqlite"
EXPORT_FILE = "evaluations.jsonl"  # committed with a lab; seeds a fresh cache
RESULT_COLUMNS = (
    "kind",
    "label",
    "benchmark",
    "metric",
    "score",
    "higher_is_better",
    "n",
    "method",
    "params",
    "seconds",
    "device",
    "weights",
)
# On a CPU, batching mixtures beats merging each one up to about this many examples (bench/grid.py at
# batch 512, batched vs per-mixture: generation 4.9× at 16, 1.6× at 64, 1.2× at 128, 1.0× at 200;
# scoring 1.6× at 16, 1.4× at 32, 0.95× at 64): greedy generation (many small passes) benefits longer.
SMALL_BENCHMARK = {"exact_match": 128, "lm_loss": 32, "choice": 32}
# progress(done, total, message)
Progress = Callable[[int, int, str], None]


def open_store(lab: Lab, path: str | Path | None = None) -> Store:
    """The lab's cache: ``path``, else $MIXLAB_CACHE, else ``<lab>/.mixlab/evaluations.sqlite``,
    seeded from the lab's committed ``evaluations.jsonl`` when created."""
    path = Path(path or os.environ.get("MIXLAB_CACHE") or lab.root / CACHE_DIR / CACHE_FILE)
    return Store(path, seed_from=lab.root / EXPORT_FILE)


class Engine:
    def __init__(self, lab: Lab, store: Store | None = None, device: str | None = None, batch_size: int | None = None):
        self.lab = lab
        self.store = store if store is not None else open_store(lab)
        self.device = pick_device(device)
        self._batch_size = batch_size  # None: from free memory (see batch_size)
        self._lock = threading.RLock()  # one evaluation at a time per engine (the UI's worker and page)
        self._examples: dict[str, list[dict]] = {}
        self._items: dict[str, list[dict] | None] = {}
        self._bench_static: dict[str, tuple[Path, dict]] = {}
        self._merger: Merger | None = None
        self._theta0: dict[str, torch.Tensor] = {}  # float32 θ_0 on the device, shared by every merger
        self._loaded: object = "base"  # what the in-memory model currently holds
        self._dirty: set[str] = set()

    # --- what the lab is made of -------------------------------------------------------------------
    @cached_property
    def base(self) -> Checkpoint:
        return load_base(self.lab.resolve(self.lab.manifest.base, "base"))

    @cached_property
    def experts(self) -> list[TaskVector]:
        return [load_task_vector(e.name, self.lab.resolve(e.path), self.base) for e in self.lab.manifest.experts]

    @cached_property
    def models_fp(self) -> str:
        """Fingerprint of the base and the experts, in order: proxy rows of another expert set never match."""
        h = hashlib.sha256(self.base.fingerprint.encode())
        for e in self.experts:
            h.update(e.fingerprint.encode())
        return h.hexdigest()

    @property
    def names(self) -> list[str]:
        return self.lab.expert_names

    def mixture(self, weights: Sequence[float], normalize: bool = False) -> Mixture:
        return Mixture.of(self.names, weights, normalize=normalize)

    def resolve_method(self, method: str | None = None, params: dict | None = None) -> tuple[str, dict]:
        """(method, validated params with defaults); the lab's [merge] defaults when not given."""
        defaults = self.lab.manifest.merge
        method = method or defaults.method
        if params is None and method == defaults.method:
            params = dict(defaults.params)
        return method, get_method(method).resolve(params)

    def spec(self, mixture: Mixture, method: str | None = None, params: dict | None = None) -> MergeSpec:
        method, resolved = self.resolve_method(method, params)
        return MergeSpec(method, tuple(mixture.weights), resolved, tuple(self.lab.manifest.merge.exclude))

    @cached_property
    def batch_size(self) -> int:
        """Rows per forward pass: as given, else from the device's free memory (OOM still halves it).
        Large batches matter on a CPU too: the batched-mixture path gains with every row it shares."""
        if self._batch_size is not None:
            return self._batch_size
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return auto_batch_size(self.model.config, free)
        if self.device.type == "cpu":
            return auto_batch_size(self.model.config, psutil.virtual_memory().available, dtype_bytes=4)
        return 64

    # --- the in-memory model -----------------------------------------------------------------------
    @cached_property
    def model(self):
        from transformers import AutoModelForCausalLM

        quiet_transformers()
        folder = self.base.folder
        try:
            model = AutoModelForCausalLM.from_pretrained(
                folder, dtype=default_dtype(self.device), local_files_only=True, trust_remote_code=False
            )
        except (OSError, ValueError) as e:
            raise ExpertError(f"base: transformers cannot load {folder}: {e}") from None
        return model.to(self.device).eval()

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(self.base.folder, local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError) as e:
            raise ExpertError(f"base: no usable tokenizer in {self.base.folder}: {e}") from None

    @cached_property
    def _params(self) -> dict[str, torch.Tensor]:
        return dict(self.model.state_dict(keep_vars=False))

    def _merger_for_experts(self) -> Merger:
        if self._merger is None:
            self._merger = Merger(
                self.base, self.experts, self.lab.manifest.merge.exclude, self.device, theta0=self._theta0
            )
        return self._merger

    def _restore(self, keys: Iterable[str]) -> None:
        for k in keys:  # every dirty key was written by a merger, which put its θ_0 in self._theta0
            self._params[k].copy_(self._theta0[k])

    def _write(self, merger: Merger, spec: MergeSpec, state: object) -> None:
        if self._loaded == state:
            return
        missing = [k for k in merger.keys if k not in self._params]
        if missing:
            raise ExpertError(f"base: the loaded model has no parameter {missing[0]} (from the checkpoint)")
        self._restore(self._dirty - set(merger.keys))
        self._loaded = None  # a failure mid-write leaves an unknown state
        merger.write(self._params, spec)
        self._dirty = set(merger.keys)
        self._loaded = state

    def load_merge(self, spec: MergeSpec) -> None:
        """Put θ_0 + merge(τ, w) into the in-memory model."""
        self._write(self._merger_for_experts(), spec, ("merge", spec))

    def load_checkpoint(self, tv: TaskVector) -> None:
        """Put a checkpoint (θ_0 + its task vector) into the in-memory model."""
        merger = Merger(self.base, [tv], (), self.device, theta0=self._theta0)
        self._write(merger, MergeSpec("linear", (1.0,)), ("ckpt", tv.fingerprint))

    def _model_desc(self, checkpoint: str | None = None) -> dict:
        """What a checkpoint (by fingerprint) or, with none, the base is, for cache keys."""
        if checkpoint is None:
            return {"kind": "base", "base": self.base.fingerprint}
        return {"kind": "checkpoint", "base": self.base.fingerprint, "checkpoint": checkpoint}

    def load_base(self) -> None:
        self._restore(self._dirty)
        self._dirty, self._loaded = set(), "base"

    # --- scores -------------------------------------------------------------------------------------
    def benchmarks(self, names: Sequence[str] | None = None) -> list[BenchmarkSpec]:
        return [self.lab.benchmark(n) for n in names] if names else self.lab.benchmarks

    def _bench_desc(self, b: BenchmarkSpec) -> dict:
        """What a benchmark is, for cache keys: its data by content (re-checked on every call, so an
        edited file makes new keys), its evaluator and options."""
        if b.name not in self._bench_static:
            options = b.model_dump(exclude={"name", "data", "evaluator"})
            self._bench_static[b.name] = (self.lab.resolve(b.data), {"evaluator": b.evaluator, "options": options})
        data, static = self._bench_static[b.name]
        return {"name": b.name, "data": file_fingerprint(data), **static}

    def _examples_of(self, b: BenchmarkSpec) -> list[dict]:
        if b.name not in self._examples:
            self._examples[b.name] = read_examples(self.lab.resolve(b.data), b)
        return self._examples[b.name]

    def _items_of(self, b: BenchmarkSpec) -> list[dict] | None:
        """The benchmark's tokenised work items: the same for every mixture, so made once."""
        if b.name not in self._items:
            self._items[b.name] = prepare(self.tokenizer, b, self._examples_of(b))
        return self._items[b.name]

    def _merge_desc(self, spec: MergeSpec) -> dict:
        return {
            "kind": "merge",
            "base": self.base.fingerprint,
            "experts": [e.fingerprint for e in self.experts],
            "method": spec.method,
            "params": spec.params,
            "weights": [round(w, ROUND) for w in spec.weights],
            "exclude": list(spec.exclude),
        }

    def _score(
        self,
        model_desc,
        benchmarks,
        load: Callable[[], None],
        row: dict,
        refresh: bool,
        progress: Progress | None,
        cancel,
        done: int = 0,
        total: int | None = None,
    ) -> list[Evaluation]:
        out = []
        total = total or len(benchmarks)
        for i, b in enumerate(benchmarks):
            key = cache_key(model_desc, self._bench_desc(b))
            hit = None if refresh else self.store.get(key)
            if hit is None:
                with self._lock:
                    load()
                    examples = self._examples_of(b)

                    def step(d, n, _b=b, _i=i):
                        if progress:
                            progress(done + _i, total, f"{row['label']} · {_b.name}: {d}/{n} examples")

                    r = run_benchmark(
                        self.model,
                        self.tokenizer,
                        b,
                        examples,
                        self.device,
                        batch_size=self.batch_size,
                        progress=step,
                        cancel=cancel,
                        items=self._items_of(b),
                    )
                hit = self._evaluation(key, b, r, str(self.device), **row)
                self.store.put(hit)
            out.append(hit)
            if progress:
                progress(done + i + 1, total, f"{row['label']} · {b.name}")
        return out

    def _evaluation(self, key: str, b: BenchmarkSpec, r, device: str, **row) -> Evaluation:
        return Evaluation(
            key=key,
            lab=self.lab.name,
            models=self.models_fp,
            benchmark=b.name,
            metric=r.metric,
            score=r.score,
            higher_is_better=r.higher_is_better,
            n=r.n,
            device=device,
            seconds=r.seconds,
            **row,
        )

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
        _done: int = 0,
        _total: int | None = None,
    ) -> list[Evaluation]:
        """Proxy scores of a mixture: evaluate θ_0 + merge(τ, w) on each benchmark (cache first)."""
        spec = self.spec(mixture, method, params)
        row = {
            "kind": "proxy",
            "label": mixture.label(),
            "method": spec.method,
            "params": spec.params,
            "weights": mixture.as_dict(),
        }
        return self._score(
            self._merge_desc(spec),
            self.benchmarks(benchmarks),
            lambda: self.load_merge(spec),
            row,
            refresh,
            progress,
            cancel,
            _done,
            _total,
        )

    def choose_path(self, method: str, bench: BenchmarkSpec, n_mixtures: int) -> str:
        """The cost rule. The batched LoRA path pays off where each mixture's own batches would be
        small: small benchmarks, or a GPU. On a CPU, once a benchmark fills its own batches, the batched
        layers' extra low-rank work costs more than the in-memory merge it saves (bench/grid.py; the
        README has the table)."""
        if n_mixtures < 2 or bench.evaluator not in BUILTIN or not get_method(method).linear_in_task_vectors:
            return "materialize"
        if supports_batched(self.experts) is not None:
            return "materialize"
        small = len(self._examples_of(bench)) <= SMALL_BENCHMARK[bench.evaluator]
        return "batched" if (self.device.type != "cpu" or small) else "materialize"

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
        """Proxy scores for many mixtures (cached ones cost nothing). ``path``: auto (the cost rule of
        :meth:`choose_path`), materialize (merge each mixture into the model), or batched (LoRA
        experts, linear methods: all mixtures share batches, nothing is merged)."""
        if path not in ("auto", "materialize", "batched"):
            raise EvaluationError(f"unknown evaluation path {path!r}; use auto, materialize or batched")
        bench = self.benchmarks(benchmarks)
        specs = [self.spec(m, method, params) for m in mixtures]
        total, done = len(mixtures) * len(bench), 0
        found: dict[tuple[int, str], Evaluation] = {}
        for b in bench:
            bdesc = self._bench_desc(b)
            keys = [cache_key(self._merge_desc(sp), bdesc) for sp in specs]
            missing = []
            for i, key in enumerate(keys):
                hit = self.store.get(key)
                if hit is None:
                    missing.append(i)
                else:
                    found[(i, b.name)] = hit
            chosen = (
                path
                if path != "auto"
                else (self.choose_path(specs[0].method, b, len(missing)) if specs else "materialize")
            )
            if chosen == "batched" and missing:
                rows = self._batched(
                    b,
                    [mixtures[i] for i in missing],
                    [specs[i] for i in missing],
                    [keys[i] for i in missing],
                    progress,
                    cancel,
                    done,
                    total,
                )
                found.update({(i, b.name): r for i, r in zip(missing, rows)})
                done += len(missing)
            for i in missing if chosen != "batched" else []:
                (ev,) = self.proxy(
                    mixtures[i], method, params, [b.name], progress=progress, cancel=cancel, _done=done, _total=total
                )
                found[(i, b.name)] = ev
                done += 1
            done += len(mixtures) - len(missing)
            if progress:
                progress(done, total, f"{b.name} done")
        return [found[(i, b.name)] for i in range(len(mixtures)) for b in bench]

    def _batched(
        self,
        b: BenchmarkSpec,
        mixtures: list[Mixture],
        specs: list[MergeSpec],
        keys: list[str],
        progress,
        cancel,
        done: int,
        total: int,
    ) -> list[Evaluation]:
        method = get_method(specs[0].method)
        if not method.linear_in_task_vectors:
            raise EvaluationError(f"the batched path merges linearly; method {method.name!r} needs path='materialize'")
        why = supports_batched(self.experts)
        if why:
            raise EvaluationError(f"the batched path does not apply to this lab: {why}")
        lam = torch.tensor([sp.params.get("scale", 1.0) for sp in specs])[:, None]
        coef = (lam * torch.tensor([sp.weights for sp in specs], dtype=torch.float32)).to(self.device)  # (M, K)
        with self._lock:
            self.load_base()
            with BatchedLora(self.model, self.experts, self.device) as lora:

                def step(d, n):
                    if progress:
                        progress(done + d * len(mixtures) // max(n, 1), total, f"{b.name}: {d}/{n} rows (batched)")

                results = run_benchmark_grouped(
                    self.model,
                    self.tokenizer,
                    b,
                    self._examples_of(b),
                    self.device,
                    len(mixtures),
                    lambda g: lora.state.set(coef[g]),
                    batch_size=self.batch_size,
                    progress=step,
                    cancel=cancel,
                    items=self._items_of(b),
                )
        out = []
        for m, sp, key, r in zip(mixtures, specs, keys, results):
            out.append(
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
            )
        self.store.put(out)
        return out

    def _checkpoint(self, kind: str, tv: TaskVector, weights: dict | None, benchmarks, refresh, progress, cancel):
        row = {"kind": kind, "label": tv.name, "method": None, "params": None, "weights": weights}
        return self._score(
            self._model_desc(tv.fingerprint),
            self.benchmarks(benchmarks),
            lambda: self.load_checkpoint(tv),
            row,
            refresh,
            progress,
            cancel,
        )

    def expert_scores(self, benchmarks=None, *, refresh=False, progress=None, cancel=None) -> list[Evaluation]:
        """Each expert on its own (the expert checkpoint itself, not a merge)."""
        out = []
        for tv in self.experts:  # already loaded: an expert is its own checkpoint
            onehot = {n: float(n == tv.name) for n in self.names}
            out += self._checkpoint("expert", tv, onehot, benchmarks, refresh, progress, cancel)
        return out

    def true_scores(self, benchmarks=None, *, refresh=False, progress=None, cancel=None) -> list[Evaluation]:
        """Models truly trained on mixtures: evaluated from their checkpoints, or taken from the manifest."""
        out = []
        for t in self.lab.manifest.true_mixtures:
            if t.path is not None:
                label = self.lab.true_mixture_name(t)
                weights = self.lab.true_mixture_weights(t).as_dict()
                tv = load_task_vector(label, self.lab.resolve(t.path), self.base)
                out += self._checkpoint("true", tv, weights, benchmarks, refresh, progress, cancel)
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
                    hib = b.evaluator != "lm_loss"
                    out.append(
                        Evaluation(
                            key=f"manifest:{label}:{b.name}",
                            lab=self.lab.name,
                            kind="true",
                            label=label,
                            models=self.models_fp,
                            benchmark=b.name,
                            metric="score" if hib else "loss",
                            score=t.scores[b.name],
                            higher_is_better=hib,
                            n=0,
                            device="manifest",
                            seconds=0.0,
                            weights=weights,
                        )
                    )
        return out

    def base_scores(self, benchmarks=None, *, refresh=False, progress=None, cancel=None) -> list[Evaluation]:
        row = {"kind": "base", "label": "base", "method": None, "params": None, "weights": None}
        return self._score(
            self._model_desc(), self.benchmarks(benchmarks), self.load_base, row, refresh, progress, cancel
        )

    # --- tables -------------------------------------------------------------------------------------
    @cached_property
    def true_fingerprints(self) -> dict[str, str]:
        """Content fingerprint of each true mixture's checkpoint (label → fingerprint)."""
        out = {}
        for t in self.lab.manifest.true_mixtures:
            if t.path is not None:
                label = self.lab.true_mixture_name(t)
                out[label] = load_task_vector(label, self.lab.resolve(t.path), self.base).fingerprint
        return out

    def cached(self, kind: str) -> list[Evaluation]:
        """Cached scores of one kind (base, expert, true, proxy) of this lab; computes nothing."""
        if kind == "proxy":
            return self.store.evaluations(models=self.models_fp, kind="proxy")
        fps = {
            "base": [None],
            "expert": [tv.fingerprint for tv in self.experts],
            "true": list(self.true_fingerprints.values()),
        }[kind]
        benches = [self._bench_desc(b) for b in self.benchmarks()]
        keys = [cache_key(self._model_desc(fp), bd) for fp in fps for bd in benches]
        hits = self.store.get_many(keys)
        out = [hits[k] for k in keys if k in hits]
        return out + (self._manifest_scores() if kind == "true" else [])

    def results(self, method: str | None = None, params: dict | None = None) -> pd.DataFrame:
        """Every cached score of this lab as one tidy table: kind, label, benchmark, score, weights (one
        column per expert), … — proxy rows only for ``method``/``params`` when given."""
        want = None if method is None else self.resolve_method(method, params)
        rows = [
            e
            for kind in ("base", "expert", "true", "proxy")
            for e in self.cached(kind)
            if kind != "proxy" or want is None or (e.method, e.params) == want
        ]
        df = pd.DataFrame([{k: getattr(e, k) for k in RESULT_COLUMNS} for e in rows], columns=list(RESULT_COLUMNS))
        for n in self.names:
            df[n] = [None if w is None else float(w.get(n, 0.0)) for w in df["weights"]]
        return df

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
    ) -> Path:
        """Write the merge as a Hugging Face model folder, or (``adapter``) a PEFT adapter."""
        spec = self.spec(mixture, method, params)
        prov = {
            "lab": self.lab.name,
            "experts": self.names,
            "weights": mixture.as_dict(),
            "method": spec.method,
            "params": spec.params,
            "exclude": list(spec.exclude),
        }
        if adapter:
            return save_lora_merge(self.experts, spec, out, overwrite=overwrite, provenance=prov)
        return save_merged(self.base, self.experts, spec, out, overwrite=overwrite, progress=progress, provenance=prov)
