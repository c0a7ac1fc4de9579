"""Export a merge with its provenance: a Hugging Face model folder or an exact PEFT adapter, with the
lab, experts (by fingerprint), weights, method, exclusions and every cached score of that merge."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mixlab.merge import save_lora_merge, save_merged
from mixlab.scoring.request import Method
from mixlab.simplex import Mixture


def provenance(engine, mixture: Mixture, method: Method) -> dict:
    """What an export records of itself: where it came from and the scores its merge has in the cache."""
    from mixlab import __version__

    spec = method.spec(mixture, engine.excluded)
    scores = []
    for b in engine.lab.benchmarks:
        hit = engine.store.get(engine._merge_key(spec, engine._bench(b)).digest)
        if hit is not None:
            scores.append(
                {"benchmark": b.name, "metric": hit.metric, "score": hit.score, "n": hit.n}
                | {"higher_is_better": b.higher_is_better}
            )
    return {
        "lab": engine.lab.name,
        "experts": engine.names,
        "weights": mixture.as_dict(),
        "method": spec.method,
        "params": spec.params,
        "exclude": list(spec.exclude),
        "base": {
            "path": engine.lab.manifest.base,
            "fingerprint": engine.sources.base_fp,
            "name_or_path": engine.base.name_or_path,  # a Hub id here becomes the card's base_model
        },
        "expert_info": [{"name": tv.name, "kind": tv.kind, "fingerprint": tv.fingerprint} for tv in engine.experts],
        "scores": scores,
        "mixlab": __version__,
    }


def export(
    engine,
    mixture: Mixture,
    out: Path,
    method: Method,
    *,
    adapter: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    in_lab: bool = False,
) -> Path:
    """Write the merge as a Hugging Face model folder, or (``adapter``) a PEFT adapter. ``overwrite``
    replaces only an earlier mixlab export (see :mod:`mixlab.merge.output`). ``in_lab``: ``out`` is one of
    the lab's exports (:meth:`Lab.export_path`), checked again as it is written to stay inside."""
    engine.refresh()
    spec = method.spec(mixture, engine.excluded)
    prov = provenance(engine, mixture, method)
    within = engine.lab.exports if in_lab else None
    if adapter:
        return save_lora_merge(engine.experts, spec, out, overwrite=overwrite, provenance=prov, within=within)
    return save_merged(
        engine.base, engine.experts, spec, out, overwrite=overwrite, progress=progress, provenance=prov, within=within
    )
