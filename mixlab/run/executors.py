"""Executors, where a sweep's evaluations run: here (:class:`LocalBackend`, the engine itself) or on a Ray
cluster (:class:`RayBackend`); the CLI's ``--backend`` and a job's spec name them ``local`` and ``ray``.

The Ray backend follows mergekit-evolve's pattern: one actor per GPU (or per CPU slot where the cluster
has none), each holding a resident engine (the base loaded once, experts as task vectors), fed mixtures
through a pool. The driver keeps the cache: it sends only what is not cached, and stores each score as it
comes back, so a worker that dies loses only the mixtures it was computing. Those are reported failed
with the reason, and the rest of the sweep goes on.

Workers read the lab from its path, so on a cluster every node must see the lab at the same path (a
shared filesystem). Each worker checks that the lab's files fingerprint the same as the driver's.

Ray is optional (``pip install -r requirements-ray.txt``); importing this module does not import it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import queue
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import psutil

from mixlab.errors import Cancelled, EvaluationError, MixlabError
from mixlab.owner import end_when_gone
from mixlab.scoring.request import ProxyRequest
from mixlab.store import Evaluation

BACKENDS = ("local", "ray")
CHUNK = 8  # at most this many mixtures per task: a batch for the batched path, little lost if a worker dies


@dataclass
class SweepResult:
    """Scores in the order of (mixture, benchmark), the failed mixtures' indices with why."""

    evaluations: list[Evaluation]
    failed: dict[int, str] = field(default_factory=dict)

    def summary(self) -> str:
        if not self.failed:
            return ""
        reasons = sorted(set(self.failed.values()))
        return f"{len(self.failed)} mixture(s) failed: {'; '.join(reasons)}"


class LocalBackend:
    """This process: the engine's own scoring (one model in memory; a failure stops the sweep)."""

    name = "local"
    progress_unit = "score"  # its progress counts one mixture on one benchmark (mixlab.scoring.proxy.score)
    workers = 1

    def run(self, engine, request: ProxyRequest, *, progress=None, cancel=None) -> SweepResult:
        """The request's scores, in (mixture, benchmark) order."""
        from mixlab.scoring import proxy  # torch: imported when something is scored

        return SweepResult(proxy.score(engine, request, progress=progress, cancel=cancel))

    def score(self, engine, request: ProxyRequest, *, cancel=None) -> list[Evaluation]:
        """One mixture's scores (a search trial's request)."""
        from mixlab.scoring import proxy

        return proxy.score(engine, request, cancel=cancel)


def dashboard_backends() -> list[str]:
    """The backends the dashboard offers: local, and ray where it is installed. Its address is the
    operator's (``MIXLAB_RAY_ADDRESS``, unset: a Ray cluster on this machine), never a page's input:
    a Ray cluster sends pickled results, so the app joins only the one it was started with."""
    return ["local", *(["ray"] if importlib.util.find_spec("ray") else [])]


@functools.cache
def shared(name: str):
    """One backend of ``name`` per process, as the dashboard's jobs use it (Ray's start-up is paid once)."""
    return backend(name, os.environ.get("MIXLAB_RAY_ADDRESS") or None if name == "ray" else None)


def backend(name: str = "local", address: str | None = None, workers: int | None = None, **kw):
    """The backend ``name`` (``local`` or ``ray``); ``address`` and ``workers`` are Ray's."""
    if name == "local":
        if address:
            raise MixlabError("--address is for --backend ray")
        return LocalBackend()
    if name == "ray":
        return RayBackend(address, workers, **kw)
    raise MixlabError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")


class _Resident:
    """A Ray actor's state: one engine over the lab, scores kept in memory (the driver stores them)."""

    def __init__(self, lab_root: str, device: str | None, batch_size: int | None, threads: int | None):
        import torch

        from mixlab.engine import Engine
        from mixlab.lab import load_lab
        from mixlab.store import Store

        if threads:
            torch.set_num_threads(threads)
        self.engine = Engine(load_lab(lab_root), Store(":memory:"), device=device, batch_size=batch_size)

    def describe(self) -> dict:
        return {"models": self.engine.models_fp, "device": str(self.engine.device), "pid": os.getpid()}

    def score(self, request: ProxyRequest, paths: dict[str, str]) -> list[Evaluation]:
        """Scores of ``request`` in (mixture, benchmark) order; ``paths`` per benchmark as the driver chose
        them, so a chunk is evaluated the way the whole sweep would be here."""
        from mixlab.scoring import proxy

        specs = request.specs(self.engine.lab)
        by = {}
        for path in dict.fromkeys(paths.values()):
            group = tuple(s for s in specs if paths[s.name] == path)
            evals = proxy.score(self.engine, replace(request, benchmarks=group, split="test", limit=None, path=path))
            by.update({(i // len(group), e.benchmark): e for i, e in enumerate(evals)})
        return [by[(i, s.name)] for i in range(len(request.mixtures)) for s in specs]


class RayBackend:
    """Evaluations on a Ray cluster: ``address`` None starts a local one, whatever ``$RAY_ADDRESS`` says
    (``auto`` joins a running one, ``ray://host:10001`` a remote one through Ray Client, which needs
    ``ray[client]``); ``workers`` caps the actors (default: one per GPU, else per CPU)."""

    name = "ray"
    progress_unit = "mixture"  # its progress counts whole mixtures, every benchmark each

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        *,
        device: str | None = None,
        batch_size: int | None = None,
        num_cpus: int | None = None,
    ):
        try:
            import ray
        except ImportError:
            raise MixlabError(
                "the Ray backend needs ray: pip install -r requirements-ray.txt (or use --backend local)"
            ) from None
        self.ray = ray
        if address is not None and address.startswith("ray://"):
            try:
                import grpc  # noqa: F401 - Ray Client's transport, which plain `ray` lacks
            except ImportError:
                raise MixlabError(
                    f"--address {address} is a Ray Client address, which needs ray[client]: pip install "
                    f"'ray[client]=={ray.__version__}' (or, on the cluster's head node, use --address auto)"
                ) from None
        if not ray.is_initialized():
            kw = {"include_dashboard": False, "log_to_driver": False}
            if address is None:  # a local cluster of this machine's cores, its files in a private temp dir
                kw |= {"num_cpus": num_cpus, "_temp_dir": tempfile.mkdtemp(prefix="mixlab-ray-")}
            before = {c.pid for c in psutil.Process().children(recursive=True)} if address is None else set()
            try:
                # "local", not None: Ray reads None as "$RAY_ADDRESS if set", and would join (or wait on) the
                # cluster the environment names; only an explicit --address joins one.
                ray.init(address=address or "local", **kw)
            except Exception as e:  # ConnectionError, or Ray's own for a bad address
                raise MixlabError(f"could not start or join Ray at {address or 'a new local cluster'}: {e}") from e
            if address is None:
                started = [c for c in psutil.Process().children(recursive=True) if c.pid not in before]
                with contextlib.suppress(psutil.Error):  # a process that ended meanwhile: nothing to watch
                    end_when_gone(started)  # Ray's per-node agents outlive a killed driver
        res = ray.cluster_resources()
        self.gpus, self.cpus = int(res.get("GPU", 0)), int(res.get("CPU", 1))
        self.workers = workers or self.gpus or self.cpus
        self.device, self.batch_size = device, batch_size
        self._pools: dict[tuple[str, str], list] = {}  # (lab root, models fingerprint) -> actors
        self._idle: dict[tuple[str, str], queue.Queue] = {}  # actors free for one-mixture calls (search)
        self._dead: set = set()
        self._lock = threading.Lock()

    def _key(self, engine) -> tuple[str, str]:
        return (str(engine.lab.root), engine.models_fp)

    def actors(self, engine) -> list:
        """The live actors for ``engine``'s lab: started on first use (and to replace dead ones), each checked
        to see the same lab files as this process."""
        key = self._key(engine)
        with self._lock:
            pool = [a for a in self._pools.get(key, []) if a not in self._dead]
            if len(pool) < self.workers:
                opts, threads = ({"num_gpus": 1}, None) if self.gpus else ({}, max(1, self.cpus // self.workers))
                cls = self.ray.remote(num_cpus=1, max_restarts=0, **opts)(_Resident)
                new = [
                    cls.remote(str(engine.lab.root), self.device, self.batch_size, threads)
                    for _ in range(self.workers - len(pool))
                ]
                seen = self.ray.get([a.describe.remote() for a in new])
                wrong = [s for s in seen if s["models"] != engine.models_fp]
                if wrong:
                    raise MixlabError(
                        f"a Ray worker (pid {wrong[0]['pid']}) sees different files at {engine.lab.root}: every node "
                        "must see the lab at the same path, with the same base and experts"
                    )
                idle = self._idle.setdefault(key, queue.Queue())
                for a in new:
                    idle.put(a)
                pool += new
            self._pools[key] = pool
            return list(pool)

    def run(
        self,
        engine,
        request: ProxyRequest,
        *,
        progress: Callable[[int, int, str], None] | None = None,
        cancel=None,
        chunk: int | None = None,
    ) -> SweepResult:
        """Proxy scores for ``mixtures`` over the actor pool: cached ones are not sent; each result is
        stored here as it arrives; a dead worker's mixtures are reported in ``failed``."""
        from mixlab.scoring import proxy

        ray = self.ray
        engine.refresh()
        mixtures = request.mixtures
        specs = request.specs(engine.lab)
        found: dict[int, list[Evaluation]] = {}
        todo = []
        for i in range(len(mixtures)):
            hit = proxy.lookup(engine, request.only([i]))
            if hit is None:
                todo.append(i)
            else:
                found[i] = hit
        auto = request.path == "auto"  # else the path the request names, for every benchmark
        paths = {
            b.name: proxy.choose_path(engine, request.method, b, len(todo)) if auto else request.path for b in specs
        }
        sent = replace(request, benchmarks=tuple(specs), split="test", limit=None)  # as scored here
        pool = list(self.actors(engine))
        size = chunk or max(1, min(CHUNK, len(todo) // max(1, len(pool))))
        chunks = [todo[j : j + size] for j in range(0, len(todo), size)]
        failed: dict[int, str] = {}
        running: dict = {}  # object ref -> (actor, chunk)
        total = len(mixtures)

        def report(message):
            if progress:
                progress(len(found) + len(failed), total, message)

        report(f"{len(found)} cached; {len(todo)} to compute on {len(pool)} Ray worker(s)")
        while chunks or running:
            if cancel is not None and cancel.is_set():
                for actor, _ in running.values():  # a running actor task cannot be interrupted: its actor is
                    ray.kill(actor)  # stopped, and replaced on next use
                    self._dead.add(actor)
                raise Cancelled(f"cancelled after {len(found)} of {total} mixtures (those are cached)")
            while chunks and pool:
                actor, part = pool.pop(0), chunks.pop(0)
                ref = actor.score.remote(sent.only(part), paths)
                running[ref] = (actor, part)
            if not running:  # every worker died: what is left cannot run
                for part in chunks:
                    failed.update({i: "no Ray workers left" for i in part})
                break
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            for ref in ready:
                actor, part = running.pop(ref)
                try:
                    evals = ray.get(ref)
                except ray.exceptions.RayActorError as e:
                    reason = f"Ray worker died: {str(e).splitlines()[0][:200]}"
                    failed.update({i: reason for i in part})
                    self._dead.add(actor)  # not put back; the next sweep starts a replacement
                    continue
                except ray.exceptions.RayTaskError as e:
                    cause = e.cause if isinstance(e.cause, Exception) else e
                    failed.update({i: f"{type(cause).__name__}: {cause}" for i in part})
                    pool.append(actor)
                    continue
                engine.store.put(evals)
                n = len(specs)
                for j, i in enumerate(part):
                    found[i] = evals[j * n : (j + 1) * n]
                pool.append(actor)
                report(f"{len(found)} of {total} mixtures scored")
        evaluations = [e for i in range(total) if i in found for e in found[i]]
        return SweepResult(evaluations, failed)

    def score(self, engine, request: ProxyRequest, *, cancel=None) -> list[Evaluation]:
        """One mixture's scores on a free worker (a search's trials call this from several threads)."""
        from mixlab.scoring import proxy

        hit = proxy.lookup(engine, request)
        if hit is not None:
            return hit
        (mixture,) = request.mixtures
        specs = request.specs(engine.lab)
        self.actors(engine)
        idle = self._idle[self._key(engine)]
        actor = idle.get()
        while actor in self._dead:
            self.actors(engine)  # replaces it
            actor = idle.get()
        try:
            paths = {b.name: "materialize" for b in specs}
            ref = actor.score.remote(replace(request, benchmarks=tuple(specs), split="test", limit=None), paths)
            while True:
                if cancel is not None and cancel.is_set():
                    self.ray.kill(actor)
                    self._dead.add(actor)
                    raise Cancelled("cancelled")
                ready, _ = self.ray.wait([ref], timeout=0.5)
                if ready:
                    break
            try:
                evals = self.ray.get(ref)
            except self.ray.exceptions.RayActorError as e:
                self._dead.add(actor)
                raise EvaluationError(f"Ray worker died while scoring {mixture}: {str(e).splitlines()[0]}") from e
            except self.ray.exceptions.RayTaskError as e:
                raise (e.cause if isinstance(e.cause, MixlabError) else EvaluationError(str(e))) from e
        finally:
            idle.put(actor)
        engine.store.put(evals)
        return evals
