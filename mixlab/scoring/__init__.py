"""Scoring: the one request value (:mod:`.request`: :class:`Method`, :class:`ProxyRequest`) and the use
cases the :class:`~mixlab.engine.Engine` session runs — proxy sweeps and the cost rule (:mod:`.proxy`),
checkpoint scores (:mod:`.checkpoints`), the cached scores as rows and the results frame (:mod:`.cached`), export with provenance
(:mod:`.export`) and the VLM image strip (:mod:`.images`). :mod:`.targets` holds the typed model/key pair
the engine's loop scores."""

from mixlab.scoring.request import Method, ProxyRequest, split_benchmark

__all__ = ["Method", "ProxyRequest", "split_benchmark"]
