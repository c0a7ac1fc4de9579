"""Per-example values for scores cached before they were kept (a shipped lab's evaluations.jsonl): each score
re-evaluated into a scratch in-memory cache, and only its per-example values written beside the cached row —
never the row itself, and never values whose score differs from the cached one beyond the re-score tolerance
(:data:`mixlab.values.SCORE_RTOL`; an accuracy must agree exactly). Computes what it backfills.

    python -m mixlab.scoring.backfill cache/demo-k3 [--kinds checkpoints,proxy] [--methods linear] [--at-true]
        [--benchmarks add-loss,rev-loss,sort-loss]

An accuracy's interval needs only its n (Wilson); a loss's needs its per-example values (a bootstrap), so
``--benchmarks`` with the lab's loss benchmarks gives every loss an interval at a fraction of the cost of a
full re-score (one teacher-forced pass per model instead of greedy decoding).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mixlab.analysis import same_mixture
from mixlab.scoring.request import declared_split, split_benchmark
from mixlab.simplex import Mixture
from mixlab.store import Evaluation, Store


@dataclass
class Backfill:
    written: int = 0
    refused: list[str] = field(default_factory=list)  # "label · benchmark: cached 0.51, recomputed 0.505"
    missing: int = 0  # recomputed scores the cache does not hold (a checkpoint never scored): not written


def _keep(engine, recomputed: list[Evaluation], out: Backfill) -> None:
    """Write the per-example values of ``recomputed`` whose cached score they reproduce."""
    cached = engine.store.get_many([e.key for e in recomputed if e.values is not None])
    ok = {}
    for e in recomputed:
        hit = cached.get(e.key)
        if e.values is None:
            continue
        if hit is None:
            out.missing += 1
        elif e.values.agrees(hit.score):
            ok[e.key] = e.values
        else:
            out.refused.append(f"{hit.label} · {hit.benchmark}: cached {hit.score!r}, recomputed {e.score!r}")
    if ok:
        engine.store.put_values(ok)
        out.written += len(ok)


def backfill(
    engine,
    kinds=("checkpoints", "proxy"),
    chunk: int = 16,
    limit: int | None = None,
    methods: set[str] | None = None,
    at_true: bool = False,
    benchmarks: Sequence[str] | None = None,
    log: Callable = print,
) -> Backfill:
    """Re-evaluate the cached scores of ``engine``'s lab that have no per-example values (checkpoints: the base,
    experts and true mixtures; proxy: every cached proxy, grouped by method and params, ``chunk`` mixtures at a
    time, at most ``limit`` mixtures; only ``methods`` when given; only at trained mixtures with ``at_true``)
    and keep their values; only on ``benchmarks`` when given; see the module docstring."""
    from mixlab.engine import Engine
    from mixlab.scoring.cached import cached
    from mixlab.scoring.checkpoints import checkpoint_scores

    scratch = Engine(engine.lab, Store(":memory:"), device="cpu", batch_size=engine.batch_size)
    out = Backfill()
    names = None if benchmarks is None else [b.name for b in engine.benchmarks(benchmarks)]  # unknown: ManifestError
    wanted = (lambda e: True) if names is None else (lambda e: declared_split(e.benchmark)[0] in names)
    start = time.perf_counter()
    if "checkpoints" in kinds:
        todo = [
            e for k in ("base", "expert", "true") for e in cached(engine, k) if e.device != "manifest" and wanted(e)
        ]
        have = engine.store.values([e.key for e in todo])
        if any(e.key not in have for e in todo):
            _keep(engine, checkpoint_scores(scratch, names), out)
        log(f"checkpoints: {out.written} written, {len(out.refused)} refused ({time.perf_counter() - start:.0f} s)")
    if "proxy" in kinds:
        # every proxy of this lab's experts, a search's dev-data and subset scores too (cached() keeps those to
        # their study); not merges with per-layer-group weights (not points of the simplex: no Mixture to re-sweep)
        engine.refresh()
        proxies = [
            e
            for e in engine.store.evaluations(models=engine.models_fp, kind="proxy")
            if wanted(e) and "layer_groups" not in (e.params or {})
        ]
        have = engine.store.values([e.key for e in proxies])
        # one sweep per method, params and split (test, dev, a limit): each with the benchmarks cached under it
        groups: dict[str, tuple[dict[tuple, Mixture], set[str]]] = {}
        trained = [[w.get(n, 0.0) for n in engine.names] for w in (e.weights for e in cached(engine, "true")) if w]
        for e in proxies:
            if methods is not None and e.method not in methods:
                continue
            if at_true and same_mixture([e.weights.get(n, 0.0) for n in engine.names], trained) is None:
                continue
            if e.key not in have:
                m = Mixture.of(engine.names, [e.weights.get(n, 0.0) for n in engine.names])
                mixtures, benches = groups.setdefault(
                    json.dumps([e.method, e.params, declared_split(e.benchmark)[1:]], sort_keys=True), ({}, set())
                )
                mixtures[m.weights] = m
                benches.add(e.benchmark)
        left = limit
        for group, (mixtures, benches) in groups.items():
            method, params, (split, n) = json.loads(group)
            specs = [
                split_benchmark(engine.lab, engine.lab.benchmark(declared_split(b)[0]), split, n)
                for b in sorted(benches)
            ]
            todo = list(mixtures.values())[:left]
            for i in range(0, len(todo), chunk):
                _keep(engine, scratch.sweep(todo[i : i + chunk], method, params, specs), out)
                log(
                    f"proxy {method} {params} {split}: {min(i + chunk, len(todo))}/{len(todo)} mixtures; "
                    f"{out.written} written, {len(out.refused)} refused ({time.perf_counter() - start:.0f} s)"
                )
            if left is not None:
                left -= len(todo)
                if left <= 0:
                    break
    return out


def main(argv=None) -> int:
    from mixlab.engine import Engine, open_store
    from mixlab.lab import load_lab
    from mixlab.values import VALUES_FILE

    ap = argparse.ArgumentParser(prog="python -m mixlab.scoring.backfill", description=__doc__.splitlines()[0])
    ap.add_argument("lab")
    ap.add_argument("--kinds", default="checkpoints,proxy")
    ap.add_argument("--limit", type=int, default=None, help="at most this many proxy mixtures")
    ap.add_argument("--methods", default=None, help="only proxies of these merge methods (comma-separated)")
    ap.add_argument("--at-true", action="store_true", help="only proxies at mixtures a true model was trained at")
    ap.add_argument("--benchmarks", default=None, help="only these benchmarks (comma-separated), e.g. the losses")
    ap.add_argument("--cache", default=None, help="the evaluation cache to fill (default: the lab's)")
    args = ap.parse_args(argv)
    lab = load_lab(args.lab)
    engine = Engine(lab, open_store(lab, args.cache) if args.cache else None, device="cpu")
    methods = None if args.methods is None else set(args.methods.split(","))
    out = backfill(
        engine,
        tuple(args.kinds.split(",")),
        limit=args.limit,
        methods=methods,
        at_true=args.at_true,
        benchmarks=None if args.benchmarks is None else args.benchmarks.split(","),
        log=lambda m: print(m, flush=True),
    )
    n = engine.store.export_values(lab.root / VALUES_FILE, lab=lab.name)
    print(f"{out.written} written, {len(out.refused)} refused, {out.missing} missing; {n} in {lab.root / VALUES_FILE}")
    for r in out.refused:
        print("refused:", r)
    return 1 if out.refused else 0


if __name__ == "__main__":
    sys.exit(main())
