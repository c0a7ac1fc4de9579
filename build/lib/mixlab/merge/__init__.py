"""Merging task vectors: pure methods and their registry (:mod:`.methods`), fused CPU kernels
(:mod:`.fused`), the resident in-place :class:`Merger` (:mod:`.inplace`), disk → disk streaming
(:mod:`.stream`), exact PEFT adapter export (:mod:`.peft_export`) and safe export folders
(:mod:`.output`)."""

from mixlab.merge.inplace import Merger
from mixlab.merge.methods import (
    MergeMethod,
    MergeSpec,
    Param,
    generator_for,
    get_method,
    is_excluded,
    methods,
    register,
    sign_consensus,
)
from mixlab.merge.output import EXPORT_MARKER, is_export
from mixlab.merge.peft_export import save_lora_merge
from mixlab.merge.stream import iter_merged, save_merged

__all__ = [
    "EXPORT_MARKER",
    "MergeMethod",
    "MergeSpec",
    "Merger",
    "Param",
    "generator_for",
    "get_method",
    "is_excluded",
    "is_export",
    "iter_merged",
    "methods",
    "register",
    "save_lora_merge",
    "save_merged",
    "sign_consensus",
]
