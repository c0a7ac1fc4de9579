"""mixlab: choose data mixtures by merging per-domain experts and evaluating the merged proxies."""

__version__ = "0.1.0"  # as pyproject.toml (a test keeps the two equal)

from mixlab.errors import (
    CacheError,
    EvaluationError,
    ExpertError,
    ManifestError,
    MergeError,
    MixlabError,
    MixtureWeightsError,
)
from mixlab.lab import Lab, load_lab
from mixlab.simplex import Mixture

__all__ = [
    "CacheError",
    "EvaluationError",
    "ExpertError",
    "Lab",
    "ManifestError",
    "MergeError",
    "MixlabError",
    "Mixture",
    "MixtureWeightsError",
    "load_lab",
]
