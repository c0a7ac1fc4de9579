"""``mixlab info``: what a lab holds (base, experts, benchmarks, true mixtures, what every merge keeps at
the base) and how many evaluations its cache has."""

from __future__ import annotations

from mixlab.cli.common import lab_command, open_engine


def add_commands(sub) -> None:
    lab_command(sub, "info", "Show a lab's experts, benchmarks, true mixtures and cached evaluations.", cmd_info)


def cmd_info(args) -> None:
    engine = open_engine(args)
    lab = engine.lab
    print(f"lab {lab.name}  ({lab.root})")
    if lab.manifest.description:
        print(f"  {lab.manifest.description}")
    print(f"base: {lab.manifest.base}  {engine.base.n_params:,} params, {len(engine.base.keys())} tensors")
    print(f"experts ({len(engine.experts)}):")
    for e in engine.experts:
        rank = f"r={e.rank}" if e.rank else ""
        changed = f"{len(e.changed)} of {len(e.keys())} tensors changed"
        print(f"  {e.name:<16} {e.kind:<5} {rank:<6} {e.n_params:>12,} params  {changed}")
    print(f"benchmarks ({len(lab.benchmarks)}):")
    for b in lab.benchmarks:
        print(f"  {b.name:<16} {b.evaluator:<12} {b.data}")
    print(f"true mixtures: {len(lab.manifest.true_mixtures)}")
    if lab.manifest.merge.preset or lab.manifest.merge.exclude:
        kept = engine.excluded_tensors()
        how = f"preset {lab.manifest.merge.preset}" if lab.manifest.merge.preset else "merge.exclude"
        print(f"kept at the base by every merge ({how}): {len(kept)} tensors, {sum(n for _, n in kept):,} params")
    from mixlab.scoring import cached as cached_scores

    counts = {k: len(cached_scores.cached(engine, k)) for k in ("base", "expert", "true", "proxy")}
    print("cached evaluations: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + f"  ({engine.store.path})")
