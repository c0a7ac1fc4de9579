"""The cached scores of a lab, each as this lab names it, as rows or one tidy table (the frame the read
side's filters in :mod:`mixlab.tables` take, their one filter for a method's rows among them). Computes
nothing."""

from __future__ import annotations

import pandas as pd

from mixlab.analysis import results_table
from mixlab.scoring.checkpoints import manifest_scores, onehot
from mixlab.scoring.request import Method
from mixlab.store import Evaluation
from mixlab.tables import of_method


def _true_spec(engine, label: str):
    return next(t for t in engine.lab.manifest.true_mixtures if engine.lab.true_mixture_name(t) == label)


def cached(engine, kind: str) -> list[Evaluation]:
    """Cached scores of one kind (base, expert, true, proxy) of this lab; computes nothing."""
    engine.refresh()
    if kind == "proxy":  # the lab's benchmarks only: a search's dev-data and subset scores stay in its study
        names = {b.name for b in engine.lab.benchmarks}
        return [e for e in engine.store.evaluations(models=engine.models_fp, kind="proxy") if e.benchmark in names]
    named = {  # (fingerprint, label, weights, replicate): how this lab names each checkpoint; a checkpoint
        # listed twice (as two mixtures' replicates) is named twice
        "base": lambda: [(None, "base", None, None)],
        "expert": lambda: [
            (fp, name, onehot(engine, name), None) for name, fp in zip(engine.names, engine.sources.expert_fps)
        ],
        "true": lambda: [
            (fp, label, engine.lab.true_mixture_weights(_true_spec(engine, label)).as_dict(), r)
            for (label, r), fp in engine.true_fingerprints.items()
        ],
    }[kind]()
    data = [engine._bench(b) for b in engine.benchmarks()]
    keys = [(engine._checkpoint_key(fp, d).digest, row) for fp, *row in named for d in data]
    hits = engine.store.get_many(list(dict.fromkeys(k for k, _ in keys)))
    out = [
        engine._as_here(
            hits[k],
            {"kind": kind, "label": label, "weights": weights, "method": None, "params": None, "replicate": r},
        )
        for k, (label, weights, r) in keys
        if k in hits
    ]
    return out + (manifest_scores(engine) if kind == "true" else [])


def results(engine, method: Method | None = None) -> pd.DataFrame:
    """Every cached score of this lab as one tidy table (see :func:`mixlab.analysis.results_table`); proxy
    rows only for ``method`` when given."""
    df = results_table([e for kind in ("base", "expert", "true", "proxy") for e in cached(engine, kind)], engine.names)
    return df if method is None else of_method(df, *method.pair()).reset_index(drop=True)
