"""mergekit configs out (:func:`to_mergekit`) and in (:func:`lab_from_mergekit`).

mergekit's methods are the same formulas on full models (see its ``generalized_task_arithmetic``): per
tensor, θ_0 + λ·Σ_i w_i τ̂_i, with TIES' sign election over w_i τ̂_i and, with ``normalize``, division by
the summed weights of the agreeing models. mixlab's ``linear`` (θ_0 + Σ w_i τ_i) is written as mergekit's
``task_arithmetic`` with λ = 1, which equals mergekit's ``linear`` when Σw = 1 and also keeps excluded
tensors at the base (weight 0 for them, by exact tensor-name filters). Where they differ, the written
config says so in its comments.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from mixlab.errors import MixlabError
from mixlab.interop.models import _expert_name, _lab_path
from mixlab.lab import read_capped
from mixlab.manifest_writer import ManifestWriter
from mixlab.scoring.request import Method

# mixlab method -> (mergekit merge_method, {mixlab param: mergekit parameter})
MERGEKIT = {
    "linear": ("task_arithmetic", {}),
    "task_arithmetic": ("task_arithmetic", {"scale": "lambda"}),
    "ties": ("ties", {"density": "density", "normalize": "normalize", "scale": "lambda"}),
    "dare_linear": ("dare_linear", {"drop_rate": "density", "scale": "lambda"}),
    "dare_ties": ("dare_ties", {"drop_rate": "density", "normalize": "normalize", "scale": "lambda"}),
}


PER_MODEL = {"density"}


DTYPES = {
    "F32": "float32",
    "BF16": "bfloat16",
    "F16": "float16",
}  # safetensors' names -> mergekit's  # mergekit parameters given per model; the rest are global


def _yaml(data) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def to_mergekit(engine, mixture, method: str | None = None, params: dict | None = None) -> tuple[str, list[str]]:
    """The mergekit config (YAML text) that reproduces ``engine``'s merge of ``mixture``, and the notes on
    where mergekit's result can differ (also written into the YAML as comments)."""
    method, params = Method.for_lab(engine.lab, method, params).pair()
    if method not in MERGEKIT:
        raise MixlabError(f"merge method {method!r} has no mergekit equivalent; mergekit covers {', '.join(MERGEKIT)}")
    mk_method, names = MERGEKIT[method]
    base = str(engine.base.folder)
    notes = []
    excluded = [engine.base.disk_name(k) for k, _ in engine.excluded_tensors()]  # mergekit reads stored names
    models = []
    for expert, w in zip(engine.experts, mixture.weights):
        if w == 0:
            continue
        if expert.kind == "lora":
            ref = f"{base}+{expert.folder}"  # mergekit bakes the adapter into the base on load (PEFT)
        else:
            ref = str(expert.ckpt.folder)
        weight = [{"filter": k, "value": 0.0} for k in excluded] + [{"value": float(w)}] if excluded else float(w)
        entry = {"model": ref, "parameters": {"weight": weight}}
        for ours, theirs in names.items():
            if theirs in PER_MODEL:
                value = float(params[ours])
                entry["parameters"][theirs] = 1.0 - value if ours == "drop_rate" else value
        models.append(entry)
    config = {"merge_method": mk_method, "base_model": base}
    shared = {theirs: params[ours] for ours, theirs in names.items() if theirs not in PER_MODEL}
    if mk_method == "task_arithmetic":
        shared.setdefault("normalize", False)
    if shared:
        config["parameters"] = {
            k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v) for k, v in shared.items()
        }
    stored = engine.base.dtype(engine.base.keys()[0])
    config |= {"models": models, "dtype": "float32", "out_dtype": DTYPES.get(stored, "float32")}

    if method == "linear":
        notes.append(
            "mixlab's linear (θ_0 + Σ w_i τ_i) is mergekit's task_arithmetic with lambda 1 (= mergekit's linear when Σw = 1)"
        )
    if any(e.kind == "lora" for e, w in zip(engine.experts, mixture.weights) if w):
        notes.append(
            "LoRA experts are given as base+adapter: mergekit bakes each adapter into a full model on load (PEFT's "
            "merge; run mergekit-yaml with --lora-merge-cache DIR); mixlab adds the factored s·BA in float32"
        )
    if method.startswith("dare"):
        notes.append(
            "DARE drops are random: mergekit draws its own (set random_seed for repeatability), so its tensors "
            f"equal mixlab's (seed {params['seed']}) only in expectation; mergekit rescales survivors by 1/density "
            "as mixlab does"
        )
    if method in ("ties", "dare_ties"):
        notes.append(
            "sign election: where Σ w_i τ̂_i is exactly 0, mergekit elects + and mixlab elects none (that entry "
            "stays at the base in mixlab); elsewhere the same"
        )
    if method == "ties" and any(e.kind == "full" for e, w in zip(engine.experts, mixture.weights) if w):
        notes.append(
            "trim ties: where several entries share the k-th largest |τ| (common in bf16 checkpoints, which hold few "
            "distinct values), mixlab and mergekit may keep different ones of them (bench/merge.py --yaml-check: "
            "0.02-0.09% of entries)"
        )
    if excluded:
        notes.append(f"{len(excluded)} excluded tensor(s) kept at the base by weight-0 filters on their exact names")
    header = "# mergekit config written by mixlab: reproduces this merge\n"
    header += (
        f"# lab {engine.lab.name}, mixture {mixture.label()}, method {method} {json.dumps(params, sort_keys=True)}\n"
    )
    header += "".join(f"# note: {n}\n" for n in notes)
    return header + _yaml(config), notes


def save_mergekit(path: Path, text: str) -> Path:
    """Write a mergekit config (the text :func:`to_mergekit` made) to ``path``, a file (new or replaced)."""
    path = Path(path)
    if path.is_dir():
        raise MixlabError(f"--mergekit-yaml {path} is a folder; give a file name, e.g. {path / 'mergekit.yml'}")
    try:
        path.write_text(text)
    except OSError as e:
        raise MixlabError(f"cannot write the mergekit config {path}: {e.strerror or e}") from None
    return path


MAX_RECIPE_BYTES = 1 << 20  # a mergekit recipe is a few KB


LAB_DEPTH = 2  # how deep below a lab folder its models sit at most: <lab>/base, <lab>/experts/<name>


def _read_recipe(config: Path) -> dict:
    """A mergekit recipe as data: at most :data:`MAX_RECIPE_BYTES`, and no YAML aliases (``*a`` can make
    a few lines expand to billions of strings; recipes have no use for them)."""
    import yaml

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise MixlabError(
                    f"{config}: line {mark.line + 1}: YAML aliases (*name) are not accepted in a mergekit recipe; "
                    "write the values out"
                )
            return super().compose_node(parent, index)

    raw = read_capped(config, MAX_RECIPE_BYTES, "a mergekit config", MixlabError)
    try:
        data = yaml.load(raw, Loader=NoAliases)  # noqa: S506 (a safe loader that also refuses aliases)
    except yaml.YAMLError as e:
        raise MixlabError(f"{config}: cannot read a mergekit config: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise MixlabError(f"{config}: not a mergekit config (no models: list)")
    return data


def _model_entry(config: Path, i: int, m) -> tuple[str, dict]:
    """(the model reference, its parameters) of ``models[i]``, or an error naming the entry."""
    where = f"{config}: models[{i}]"
    if isinstance(m, str):
        return m, {}
    if not isinstance(m, dict) or "model" not in m:
        raise MixlabError(f"{where}: expected a model path or a mapping with model: (got {type(m).__name__})")
    ref, params = m["model"], m.get("parameters") or {}
    if isinstance(ref, dict):  # mergekit's long form: model: {model: {path: ...}, lora: {path: ...}}
        raise MixlabError(f"{where}.model: the long form (model: path:, lora:) is not read; write base+adapter paths")
    if not isinstance(ref, str) or not ref:
        raise MixlabError(f"{where}.model: expected a path, got {type(ref).__name__}")
    if not isinstance(params, dict):
        raise MixlabError(f"{where}.parameters: expected a mapping, got {type(params).__name__}")
    return ref, params


def _lab_root(config: Path, folders: list[Path]) -> Path:
    """The lab folder when ``--out`` is not given: the folder that holds every model, if it looks like a
    lab's (not the filesystem root, the home folder or an ancestor of it, a top-level folder, or a folder
    far above the models, all of which hold unrelated things the lab's containment checks would let in)."""
    root = Path(os.path.commonpath(folders))
    home = Path.home().resolve()
    deepest = max(len(p.relative_to(root).parts) for p in folders)
    why = None
    if len(root.parts) <= 2:
        why = "a top-level folder" if len(root.parts) == 2 else "the filesystem root"
    elif home.is_relative_to(root):
        why = "your home folder or one above it"
    elif deepest > LAB_DEPTH:
        why = f"{deepest} levels above a model (a lab holds them at most {LAB_DEPTH} deep: base/, experts/NAME/)"
    if why:
        raise MixlabError(
            f"{config}: the folder that holds every model is {root}, {why}; it cannot be the lab folder. "
            "Pass --out LAB (a new folder: link or copy the models into it) or --out a folder that holds them"
        )
    return root


def lab_from_mergekit(config: Path, out: Path | None = None, name: str | None = None) -> Path:
    """A lab from a mergekit config: its base_model as the base, its models as experts (``base+adapter``
    references as LoRA experts), its method and parameters as the lab's merge defaults; the mixture weights
    it used go in a comment. Written to ``out`` (default: the folder that holds every model, when that
    folder can be a lab's: :func:`_lab_root`)."""
    config = Path(config)
    data = _read_recipe(config)
    here = config.parent

    def local(ref, field: str) -> Path:
        if not isinstance(ref, str) or not ref or "\0" in ref:
            raise MixlabError(f"{config}: {field}: expected a folder path, got {ref!r}")
        p = Path(os.path.expanduser(ref))
        p = p if p.is_absolute() else here / p
        if not p.is_dir():
            raise MixlabError(
                f"{config}: {field} {ref!r} is not a local folder; mixlab loads nothing from a hub: download it "
                "and point the config at the folder"
            )
        return p.resolve()

    if data.get("base_model") is None:
        raise MixlabError(f"{config}: no base_model; a lab needs the base the experts were fine-tuned from")
    base = local(data["base_model"], "base_model")
    entries = [_model_entry(config, i, m) for i, m in enumerate(data["models"])]
    experts, weights = [], {}
    for i, (ref, params) in enumerate(entries):
        model_ref, _, lora = ref.partition("+")
        path = local(lora, f"models[{i}] adapter") if lora else local(model_ref, f"models[{i}].model")
        if path == base:
            continue  # mergekit lists the base among the models for some methods
        expert = _expert_name(path)
        experts.append((expert, path))
        w = params.get("weight")
        if isinstance(w, (int, float)) and not isinstance(w, bool):
            weights[expert] = float(w)
    if not experts:
        raise MixlabError(f"{config}: no models besides the base")
    root = Path(out).resolve() if out else _lab_root(config, [base, *(p for _, p in experts)])
    method = data.get("merge_method", "linear")
    if not isinstance(method, str):
        raise MixlabError(f"{config}: merge_method: expected a name, got {method!r}")
    shared = data.get("parameters") or {}
    if not isinstance(shared, dict):
        raise MixlabError(f"{config}: parameters: expected a mapping, got {type(shared).__name__}")
    doc = ManifestWriter()
    doc.comment(f"from mergekit config {config.resolve()}")
    if weights:
        doc.comment("its mixture: " + ", ".join(f"{k}={v:g}" for k, v in weights.items()))
    doc.set("name", name or re.sub(r"[^A-Za-z0-9_.\-]", "-", config.stem)[:64])
    doc.set("base", _lab_path(root, base, "base_model"))
    for expert, path in experts:
        doc.blank()
        doc.item("experts")
        doc.set("name", expert)
        doc.set("path", _lab_path(root, path, "model"))
    method_here, ours = "linear", {}
    if method in MERGEKIT and method != "linear":  # the same names and formulas (the module docstring)
        method_here, ours = method, {v: k for k, v in MERGEKIT[method][1].items()}
    elif method != "linear":
        doc.comment(f"mergekit method {method!r} has no mixlab equivalent: the lab merges linearly")
    params = {}
    first = entries[0][1]
    for theirs, value in {**shared, **{k: v for k, v in first.items() if k in PER_MODEL}}.items():
        mine = ours.get(theirs)
        if mine and isinstance(value, (int, float)):
            params[mine] = 1.0 - value if mine == "drop_rate" else value
    if method_here == "task_arithmetic" and params.get("scale", 1.0) == 1.0:
        method_here, params = "linear", {}
    doc.blank()
    doc.table("merge")
    doc.set("method", method_here)
    if params:
        doc.set("params", params)
    root.mkdir(parents=True, exist_ok=True)
    return doc.write(root)
