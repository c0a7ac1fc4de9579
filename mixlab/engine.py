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
import torch

from mixlab.errors import ExpertError
from mixlab.evaluate import (
    default_dtype,
    pick_device,
    quiet_transformers,
    read_examples,
    run_benchmark,
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
# progress(done, total, message)
Progress = Callable[[int, int, str], None]


def open_store(lab: Lab, path: str | Path | None = None) -> Store:
    """The lab's cache: ``path``, else $MIXLAB_CACHE, else ``<lab>/.mixlab/evaluations.sqlite``,
    seeded from the lab's committed ``evaluations.jsonl`` when created."""
    path = Path(path or os.environ.get("MIXLAB_CACHE") or lab.root / CACHE_DIR / CACHE_FILE)
    return Store(path, seed_from=lab.root / EXPORT_FILE)


class Engine:
    def __init__(self, lab: Lab, store: Store | None = None, device: str | None = None, batch_size: int = 64):
        self.lab = lab
        self.store = store if store is not None else open_store(lab)
        self.device = pick_device(device)
        self.batch_size = batch_size
        self._lock = threading.RLock()  # one evaluation at a time per engine (the UI's worker and page)
        self._examples: dict[str, list[dict]] = {}
        self._merger: Merger | None = None
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

    def spec(self, mixture: Mixture, method: str | None = None, params: dict | None = None) -> MergeSpec:
        defaults = self.lab.manifest.merge
        method = method or defaults.method
        if params is None and method == defaults.method:
            params = dict(defaults.params)
        resolved = get_method(method).resolve(params)
        return MergeSpec(method, tuple(mixture.weights), resolved, tuple(defaults.exclude))

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
            self._merger = Merger(self.base, self.experts, self.lab.manifest.merge.exclude, self.device)
        return self._merger

    def _restore(self, keys: Iterable[str]) -> None:
        for k in keys:
            self._params[k].copy_(self.base.get(k))

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

    def load_checkpoint(self, folder: Path, label: str) -> TaskVector:
        tv = load_task_vector(label, folder, self.base)
        self._write(Merger(self.base, [tv], (), self.device), MergeSpec("linear", (1.0,)), ("ckpt", tv.fingerprint))
        return tv

    def load_base(self) -> None:
        self._restore(self._dirty)
        self._dirty, self._loaded = set(), "base"

    # --- scores -------------------------------------------------------------------------------------
    def benchmarks(self, names: Sequence[str] | None = None) -> list[BenchmarkSpec]:
        return [self.lab.benchmark(n) for n in names] if names else self.lab.benchmarks

    def _bench_desc(self, b: BenchmarkSpec) -> dict:
        data = self.lab.resolve(b.data)
        return {"name": b.name, "data": file_fingerprint(data), "evaluator": b.evaluator,
                "options": b.model_dump(exclude={"name", "data", "evaluator"})}

    def _examples_of(self, b: BenchmarkSpec) -> list[dict]:
        if b.name not in self._examples:
            self._examples[b.name] = read_examples(self.lab.resolve(b.data), b)
        return self._examples[b.name]

    def _merge_desc(self, spec: MergeSpec) -> dict:
        return {"kind": "merge", "base": self.base.fingerprint, "experts": [e.fingerprint for e in self.experts],
                "method": spec.method, "params": spec.params, "weights": [round(w, ROUND) for w in spec.weights],
                "exclude": list(spec.exclude)}

    def _score(self, model_desc, benchmarks, load: Callable[[], None], row: dict, refresh: bool,
               progress: Progress | None, cancel, done: int = 0, total: int | None = None) -> list[Evaluation]:
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

                    r = run_benchmark(self.model, self.tokenizer, b, examples, self.device,
                                      batch_size=self.batch_size, progress=step, cancel=cancel)
                hit = Evaluation(key=key, lab=self.lab.name, models=self.models_fp, benchmark=b.name, metric=r.metric,
                                 score=r.score, higher_is_better=r.higher_is_better, n=r.n, device=str(self.device),
                                 seconds=r.seconds, **row)
                self.store.put(hit)
            out.append(hit)
            if progress:
                progress(done + i + 1, total, f"{row['label']} · {b.name}")
        return out

    def proxy(self, mixture: Mixture, method: str | None = None, params: dict | None = None,
              benchmarks: Sequence[str] | None = None, *, refresh: bool = False, progress: Progress | None = None,
              cancel=None, _done: int = 0, _total: int | None = None) -> list[Evaluation]:
        """Proxy scores of a mixture: evaluate θ_0 + merge(τ, w) on each benchmark (cache first)."""
        spec = self.spec(mixture, method, params)
        row = {"kind": "proxy", "label": mixture.label(), "method": spec.method, "params": spec.params,
               "weights": mixture.as_dict()}
        return self._score(self._merge_desc(spec), self.benchmarks(benchmarks), lambda: self.load_merge(spec),
                           row, refresh, progress, cancel, _done, _total)

    def sweep(self, mixtures: Sequence[Mixture], method: str | None = None, params: dict | None = None,
              benchmarks: Sequence[str] | None = None, *, progress: Progress | None = None, cancel=None) -> list[Evaluation]:
        """Proxy scores for many mixtures; cached ones cost nothing."""
        bench = self.benchmarks(benchmarks)
        total, out = len(mixtures) * len(bench), []
        for j, m in enumerate(mixtures):
            out += self.proxy(m, method, params, [b.name for b in bench], progress=progress, cancel=cancel,
                              _done=j * len(bench), _total=total)
        return out

    def _checkpoint(self, kind: str, label: str, folder: Path, weights: dict | None, benchmarks, refresh, progress, cancel):
        tv = load_task_vector(label, folder, self.base)
        desc = {"kind": "checkpoint", "base": self.base.fingerprint, "checkpoint": tv.fingerprint}
        row = {"kind": kind, "label": label, "method": None, "params": None, "weights": weights}
        return self._score(desc, self.benchmarks(benchmarks), lambda: self.load_checkpoint(folder, label), row,
                           refresh, progress, cancel)

    def expert_scores(self, benchmarks=None, *, refresh=False, progress=None, cancel=None) -> list[Evaluation]:
        """Each expert on its own (the expert checkpoint itself, not a merge)."""
        out = []
        for e in self.lab.manifest.experts:
            onehot = {n: float(n == e.name) for n in self.names}
            out += self._checkpoint("expert", e.name, self.lab.resolve(e.path), onehot, benchmarks, refresh, progress, cancel)
        return out

    def true_scores(self, benchmarks=None, *, refresh=False, progress=None, cancel=None) -> list[Evaluation]:
        """Models truly trained on mixtures: evaluated from their checkpoints, or taken from the manifest."""
        out = []
        for t in self.lab.manifest.true_mixtures:
            label = self.lab.true_mixture_name(t)
            weights = self.lab.true_mixture_weights(t).as_dict()
            if t.path is not None:
                out += self._checkpoint("true", label, self.lab.resolve(t.path), weights, benchmarks, refresh, progress, cancel)
                continue
            for b in self.benchmarks(benchmarks):
                if b.name in t.scores:
                    hib = b.evaluator != "lm_loss"
                    out.append(Evaluation(key=f"manifest:{label}:{b.name}", lab=self.lab.name, kind="true", label=label,
                                          models=self.models_fp, benchmark=b.name, metric="loss" if not hib else "score",
                                          score=t.scores[b.name], higher_is_better=hib, n=0, device="manifest",
                                          seconds=0.0, weights=weights))
        return out

    def base_scores(self, benchmarks=None, *, refresh=False, progress=None, cancel=None) -> list[Evaluation]:
        desc = {"kind": "base", "base": self.base.fingerprint}
        row = {"kind": "base", "label": "base", "method": None, "params": None, "weights": None}
        return self._score(desc, self.benchmarks(benchmarks), self.load_base, row, refresh, progress, cancel)

    # --- tables -------------------------------------------------------------------------------------
    def cached(self, kind: str) -> list[Evaluation]:
        """Cached scores of the lab's experts/true mixtures/base without computing anything missing."""
        out = []
        benches = self.benchmarks()
        if kind == "proxy":
            return self.store.evaluations(models=self.models_fp, kind="proxy")
        descs: list[dict] = []
        if kind == "base":
            descs.append({"kind": "base", "base": self.base.fingerprint})
        elif kind == "expert":
            descs += [{"kind": "checkpoint", "base": self.base.fingerprint, "checkpoint": tv.fingerprint} for tv in self.experts]
        elif kind == "true":
            for t in self.lab.manifest.true_mixtures:
                if t.path is not None:
                    tv = load_task_vector(self.lab.true_mixture_name(t), self.lab.resolve(t.path), self.base)
                    descs.append({"kind": "checkpoint", "base": self.base.fingerprint, "checkpoint": tv.fingerprint})
        for desc in descs:
            for b in benches:
                hit = self.store.get(cache_key(desc, self._bench_desc(b)))
                if hit is not None:
                    out.append(hit)
        if kind == "true":
            out += [e for e in self.true_scores() if e.device == "manifest"]
        return out

    def results(self, method: str | None = None, params: dict | None = None) -> pd.DataFrame:
        """Every cached score of this lab as one tidy table: kind, label, benchmark, score, weights (one
        column per expert), … — proxy rows only for ``method``/``params`` when given."""
        rows = []
        for kind in ("base", "expert", "true", "proxy"):
            for e in self.cached(kind):
                if kind == "proxy" and method is not None:
                    spec = self.spec(self.mixture([1.0] + [0.0] * (len(self.names) - 1)), method, params)
                    if e.method != spec.method or e.params != spec.params:
                        continue
                rows.append(e)
        df = pd.DataFrame([{k: getattr(e, k) for k in ("kind", "label", "benchmark", "metric", "score",
                                                       "higher_is_better", "n", "method", "params", "seconds",
                                                       "device", "weights")} for e in rows])
        if df.empty:
            df = pd.DataFrame(columns=["kind", "label", "benchmark", "metric", "score", "higher_is_better", "n",
                                       "method", "params", "seconds", "device", "weights"])
        for n in self.names:
            df[n] = [None if w is None else float(w.get(n, 0.0)) for w in df["weights"]]
        return df

    # --- export -------------------------------------------------------------------------------------
    def export(self, mixture: Mixture, out: Path, method: str | None = None, params: dict | None = None, *,
               adapter: bool = False, overwrite: bool = False, progress: Callable[[int, int], None] | None = None) -> Path:
        """Write the merge as a Hugging Face model folder, or (``adapter``) a PEFT adapter."""
        spec = self.spec(mixture, method, params)
        prov = {"lab": self.lab.name, "experts": self.names, "weights": mixture.as_dict(), "method": spec.method,
                "params": spec.params, "exclude": list(spec.exclude)}
        if adapter:
            return save_lora_merge(self.experts, spec, out, overwrite=overwrite, provenance=prov)
        return save_merged(self.base, self.experts, spec, out, overwrite=overwrite, progress=progress, provenance=prov)

