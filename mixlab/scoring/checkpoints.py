"""Checkpoint scores: the base, each expert on its own, and each model truly trained on a mixture (from
its checkpoint, or as written in lab.toml), scored by the engine's cached-first loop like a merge."""

from __future__ import annotations

from mixlab.experts import TaskVector
from mixlab.scoring.targets import CheckpointModel
from mixlab.store import Evaluation


def _checkpoint(
    engine, kind: str, tv: TaskVector | None, label: str, weights, benchmarks, refresh, progress, cancel, **extra
):
    row = {"kind": kind, "label": label, "method": None, "params": None, "weights": weights} | extra
    return engine._score(CheckpointModel(tv), engine.benchmarks(benchmarks), row, refresh, progress, cancel)


def onehot(engine, name: str) -> dict[str, float]:
    """An expert's weights: 1 on itself."""
    return {n: float(n == name) for n in engine.names}


def expert_scores(engine, benchmarks=None, *, refresh=False, progress=None, cancel=None) -> list[Evaluation]:
    """Each expert on its own (the expert checkpoint itself, not a merge)."""
    engine.refresh()
    out = []
    for tv in engine.experts:  # already loaded: an expert is its own checkpoint
        out += _checkpoint(
            engine, "expert", tv, tv.name, onehot(engine, tv.name), benchmarks, refresh, progress, cancel
        )
    return out


def true_scores(engine, benchmarks=None, *, refresh=False, progress=None, cancel=None) -> list[Evaluation]:
    """Models truly trained on mixtures: evaluated from their checkpoints, or taken from the manifest."""
    engine.refresh()
    out = []
    for label, r, weights, tv in engine.sources.true_checkpoints():  # r: the replicate (1 for a single path)
        out += _checkpoint(engine, "true", tv, label, weights, benchmarks, refresh, progress, cancel, replicate=r)
    return out + manifest_scores(engine, benchmarks)


def base_scores(engine, benchmarks=None, *, refresh=False, progress=None, cancel=None) -> list[Evaluation]:
    engine.refresh()
    return _checkpoint(engine, "base", None, "base", None, benchmarks, refresh, progress, cancel)


def checkpoint_scores(engine, benchmarks=None, *, refresh=False, progress=None, cancel=None) -> list[Evaluation]:
    """Every checkpoint of the lab on every benchmark: the base, each expert, each true mixture (what
    ``sweep --checkpoints`` and the Lab page's button run); cached scores are reused."""
    kw = {"refresh": refresh, "progress": progress, "cancel": cancel}
    return [
        *base_scores(engine, benchmarks, **kw),
        *expert_scores(engine, benchmarks, **kw),
        *true_scores(engine, benchmarks, **kw),
    ]


def manifest_scores(engine, benchmarks=None) -> list[Evaluation]:
    """True-mixture scores written in lab.toml (no checkpoint to evaluate)."""
    lab = engine.lab
    out = []
    for t in lab.manifest.true_mixtures:
        if t.scores is None:
            continue
        label = lab.true_mixture_name(t)
        weights = lab.true_mixture_weights(t).as_dict()
        for b in engine.benchmarks(benchmarks):
            if b.name in t.scores:
                out.append(
                    Evaluation(
                        key=f"manifest:{label}:{b.name}",
                        lab=lab.name,
                        kind="true",
                        label=label,
                        models=engine.models_fp,
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


def unscored(engine) -> dict[str, int]:
    """How many checkpoints of each kind (base, expert, true) lack a cached score on some benchmark;
    computes nothing."""
    from mixlab.scoring.cached import cached

    n_bench = len(engine.benchmarks())
    out = {}
    for kind, total in (
        ("base", 1),
        ("expert", len(engine.names)),
        ("true", sum(len(t.checkpoints) for t in engine.lab.manifest.true_mixtures)),
    ):
        counts: dict[tuple, int] = {}
        for e in cached(engine, kind):
            if e.device != "manifest":
                counts[e.label, e.replicate] = counts.get((e.label, e.replicate), 0) + 1
        out[kind] = total - sum(1 for c in counts.values() if c >= n_bench)
    return out
