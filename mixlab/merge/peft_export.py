"""A linear merge of LoRA experts written as one PEFT adapter, exactly (rank concatenation)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from mixlab.checkpoint import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from mixlab.errors import MergeError
from mixlab.experts import PEFT_PREFIX, LoraTaskVector, TaskVector, concat_factors
from mixlab.lazy import safetensors_torch, torch
from mixlab.merge import output
from mixlab.merge.methods import MergeSpec, active, is_excluded


def save_lora_merge(
    experts: Sequence[TaskVector],
    spec: MergeSpec,
    out: Path,
    *,
    overwrite: bool = False,
    provenance: dict | None = None,
    within: Path | None = None,
) -> Path:
    """Write θ_0 + λ Σ w_i τ_i for LoRA experts as one PEFT adapter, exactly.

    Per module the factors are concatenated along the rank (:func:`mixlab.experts.concat_factors`):
    A = [A_1; …; A_K] (Σr, in) and B = [c_1 s_1 B_1, …, c_K s_K B_K] (out, Σr) with c_i = λ·w_i, so
    B@A = Σ c_i s_i B_i A_i with no cross terms (unlike PEFT's ``add_weighted_adapter(..., "linear")``,
    which scales A and B by √w). The adapter's scale is 1 (lora_alpha = r for every module).
    """
    method, params = spec.resolved()
    if not method.linear_in_task_vectors:
        raise MergeError(f"a PEFT adapter can hold only linear merges (linear, task_arithmetic), not {method.name!r}")
    if not all(isinstance(e, LoraTaskVector) for e in experts):
        full = [e.name for e in experts if not isinstance(e, LoraTaskVector)]
        raise MergeError(f"a PEFT adapter export needs LoRA experts; {', '.join(full)} are full fine-tunes")
    chosen = active(experts, spec.weights)
    # an adapter adds every factor it holds: it keeps a tensor at the base only by not adapting it
    for e, _ in chosen:
        kept = [k for k in e.keys() if is_excluded(k, spec.exclude)]
        if kept:
            raise MergeError(
                f"expert {e.name!r} adapts {kept[0]}, which the lab keeps at the base (merge.exclude or its preset); "
                "a PEFT adapter cannot keep it, so export a full model instead"
            )
    for e, _ in chosen:
        if e.replaced:
            raise MergeError(f"expert {e.name!r} saves whole tensors (modules_to_save); export a full model instead")
    fans = {bool(e.config.get("fan_in_fan_out")) for e, _ in chosen}
    if len(fans) > 1:
        raise MergeError("the experts disagree on fan_in_fan_out; export a full model instead")
    fan = fans.pop()
    coef = torch.tensor(method.coefficients([w for _, w in chosen], params))
    out, tmp = output.start(out, overwrite, within)
    try:
        tensors, ranks = {}, {}
        for key in sorted(set().union(*(e.factors for e, _ in chosen))):
            a, b, group, transpose = concat_factors(
                [(i, e.factors[key]) for i, (e, _) in enumerate(chosen) if key in e.factors]
            )
            b = b * coef[group]  # (out, Σr): each rank column times c_i of its expert
            module = key.removesuffix(".weight")
            emb = transpose and not fan
            suffix = ("lora_embedding_A", "lora_embedding_B") if emb else ("lora_A.weight", "lora_B.weight")
            tensors[f"{PEFT_PREFIX}{module}.{suffix[0]}"] = a.contiguous()
            tensors[f"{PEFT_PREFIX}{module}.{suffix[1]}"] = b.contiguous()
            ranks[module] = a.shape[0]
        r = max(ranks.values())
        pattern = {m.replace(".", "\\."): rank for m, rank in ranks.items() if rank != r}
        cfg = dict(chosen[0][0].config)
        cfg.update(
            r=r,
            lora_alpha=r,
            use_rslora=False,
            rank_pattern=pattern,
            alpha_pattern=dict(pattern),
            target_modules=sorted(ranks),  # full names: "q_proj" would also adapt a vision tower's q_proj
            modules_to_save=None,
            fan_in_fan_out=fan,
            # the first expert's own selectors would narrow the full names above to its layers only
            layers_to_transform=None,
            layers_pattern=None,
            exclude_modules=None,
        )
        safetensors_torch.save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True))
        return output.finish(tmp, out, provenance or {})
    except BaseException:
        output.abort(tmp)
        raise
