"""Meeting researchers' own files: mergekit configs out (:func:`to_mergekit`) and in
(:func:`lab_from_mergekit`), and a ``lab.toml`` written from a folder of checkpoints and JSONL
(:func:`init_lab`).

mergekit's methods are the same formulas on full models (see its ``generalized_task_arithmetic``): per
tensor, θ_0 + λ·Σ_i w_i τ̂_i, with TIES' sign election over w_i τ̂_i and, with ``normalize``, division by
the summed weights of the agreeing models. mixlab's ``linear`` (θ_0 + Σ w_i τ_i) is written as mergekit's
``task_arithmetic`` with λ = 1, which equals mergekit's ``linear`` when Σw = 1 and also keeps excluded
tensors at the base (weight 0 for them, by exact tensor-name filters). Where they differ, the written
config says so in its comments.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from mixlab.errors import ManifestError, MixlabError
from mixlab.experts import ADAPTER_CONFIG
from mixlab.lab import EXPORTS, toml_value

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
    method, params = engine.resolve_method(method, params)
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


def _lab_path(root: Path, path: Path, what: str) -> str:
    path = path.resolve()
    if not path.is_relative_to(root):
        raise MixlabError(f"{what} {path} is outside the lab folder {root}; a lab holds (or links) its models")
    return path.relative_to(root).as_posix() or "."


def lab_from_mergekit(config: Path, out: Path | None = None, name: str | None = None) -> Path:
    """A lab from a mergekit config: its base_model as the base, its models as experts (``base+adapter``
    references as LoRA experts), its method and parameters as the lab's merge defaults; the mixture weights
    it used go in a comment. Written to ``out`` (default: the folder that holds every model)."""
    import yaml

    config = Path(config)
    try:
        data = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise MixlabError(f"{config}: cannot read a mergekit config: {e}") from None
    if not isinstance(data, dict) or "models" not in data:
        raise MixlabError(f"{config}: not a mergekit config (no models: list)")
    here = config.parent

    def local(ref: str, field: str) -> Path:
        p = Path(os.path.expanduser(ref))
        p = p if p.is_absolute() else here / p
        if not p.exists():
            raise MixlabError(
                f"{config}: {field} {ref!r} is not a local folder; mixlab loads nothing from a hub: download it "
                "and point the config at the folder"
            )
        return p.resolve()

    base_ref = data.get("base_model")
    models = data["models"] or []
    refs = [str(m["model"]) if isinstance(m, dict) else str(m) for m in models]
    if base_ref is None:
        raise MixlabError(f"{config}: no base_model; a lab needs the base the experts were fine-tuned from")
    base = local(str(base_ref), "base_model")
    experts, weights = [], {}
    for i, (m, ref) in enumerate(zip(models, refs)):
        model_ref, _, lora = ref.partition("+")
        path = local(lora, f"models[{i}] adapter") if lora else local(model_ref, f"models[{i}].model")
        if path == base:
            continue  # mergekit lists the base among the models for some methods
        expert = path.name.replace(".", "-")
        experts.append((expert, path))
        w = (m.get("parameters") or {}).get("weight") if isinstance(m, dict) else None
        if isinstance(w, (int, float)):
            weights[expert] = float(w)
    if not experts:
        raise MixlabError(f"{config}: no models besides the base")
    root = Path(out).resolve() if out else Path(os.path.commonpath([base, *(p for _, p in experts)]))
    method = str(data.get("merge_method", "linear"))
    lines = [f"# from mergekit config {config.resolve()}", f"name = {toml_value(name or config.stem)}"]
    lines += [f"base = {toml_value(_lab_path(root, base, 'base_model'))}", ""]
    if weights:
        lines.insert(1, "# its mixture: " + ", ".join(f"{k}={v:g}" for k, v in weights.items()))
    for expert, path in experts:
        lines += [
            "[[experts]]",
            f"name = {toml_value(expert)}",
            f"path = {toml_value(_lab_path(root, path, 'model'))}",
            "",
        ]
    method_here, ours = "linear", {}
    if method in MERGEKIT and method != "linear":  # the same names and formulas (the module docstring)
        method_here, ours = method, {v: k for k, v in MERGEKIT[method][1].items()}
    elif method != "linear":
        lines.append(f"# mergekit method {method!r} has no mixlab equivalent: the lab merges linearly")
    params = {}
    shared = data.get("parameters") or {}
    first = (models[0].get("parameters") or {}) if isinstance(models[0], dict) else {}
    for theirs, value in {**shared, **{k: v for k, v in first.items() if k in PER_MODEL}}.items():
        mine = ours.get(theirs)
        if mine and isinstance(value, (int, float)):
            params[mine] = 1.0 - value if mine == "drop_rate" else value
    if method_here == "task_arithmetic" and params.get("scale", 1.0) == 1.0:
        method_here, params = "linear", {}
    lines += ["[merge]", f"method = {toml_value(method_here)}"]
    if params:
        lines.append(f"params = {toml_value(params)}")
    lines.append("")
    return _write_manifest(root, "\n".join(lines))


def _write_manifest(root: Path, text: str) -> Path:
    from mixlab.lab import MANIFEST, load_lab

    root.mkdir(parents=True, exist_ok=True)
    target = root / MANIFEST
    if target.exists():
        raise MixlabError(f"{target} exists; move it away first (mixlab never overwrites a lab manifest)")
    target.write_text(text)
    try:
        load_lab(root)
    except ManifestError as e:
        target.unlink()
        raise MixlabError(f"the lab.toml written for {root} does not validate, so it was removed: {e}") from None
    return target


def _kind(folder: Path) -> str | None:
    if (folder / ADAPTER_CONFIG).is_file():
        return "lora"
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return "full"
    return None


def _guess_evaluator(path: Path) -> tuple[str, str]:
    """The evaluator a JSONL file's fields call for, and why (read from its first row)."""
    try:
        with open(path) as f:
            row = json.loads(f.readline())
    except (OSError, ValueError) as e:
        raise MixlabError(f"{path}: cannot read a first JSON row: {e}") from None
    fields = set(row) if isinstance(row, dict) else set()
    if {"choices", "label"} <= fields:
        return "choice", "rows have choices and label: multiple choice, scored by log-likelihood"
    if {"prompt", "answer"} <= fields:
        return "exact_match", "rows have prompt and answer: greedy generation, exact match"
    if "text" in fields or {"prompt", "completion"} <= fields:
        return "lm_loss", "rows have text (or prompt and completion): mean token loss, lower is better"
    raise MixlabError(
        f"{path}: cannot tell the evaluator from its fields {sorted(fields)}; rows need prompt+answer (exact_match), "
        "prompt+choices+label (choice) or text / prompt+completion (lm_loss)"
    )


def init_lab(
    root: Path,
    base: str,
    experts: str | Sequence[str] | None = None,
    benchmarks: str = "data/*.jsonl",
    *,
    names: dict[str, str] | None = None,
    true: str | None = None,
    weights_from: str | None = None,
    write: bool = True,
) -> Path | str:
    """Write ``root/lab.toml`` from what is there: the base folder, every PEFT adapter or full fine-tune that
    ``experts`` (globs under ``root``; None: every one anywhere under it, see :func:`model_folders`) matches,
    named after its folder or as ``names`` (folder name → expert name) says, every JSONL file ``benchmarks``
    matches, each with its evaluator guessed from its fields and the guess stated in a comment, and the
    checkpoints ``true`` matches as true mixtures, their weights read from ``weights_from`` (see
    :func:`true_mixture_lines`). ``write=False``: return the text."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise MixlabError(f"lab folder {root} does not exist")
    patterns = [experts] if isinstance(experts, str) else list(experts or [])
    flags = [("--experts", p) for p in patterns] + [("--benchmarks", benchmarks)] + ([("--true", true)] if true else [])
    for flag, pattern in flags:
        if Path(pattern).is_absolute() or ".." in Path(pattern).parts:
            raise MixlabError(f"{flag} {pattern!r}: a glob under the lab folder, without .. (e.g. experts/*)")
    base_path = Path(base) if Path(base).is_absolute() else root / base
    base_rel = _lab_path(root, base_path, "--base")
    if _kind(base_path) != "full":
        raise MixlabError(f"--base {base}: no config.json and *.safetensors in {base_path}")
    lines = [f"# written by mixlab lab init from {root}", f"name = {toml_value(root.name.replace('.', '-'))}"]
    lines += [f"base = {toml_value(base_rel)}", ""]
    true_folders = sorted(p for p in root.glob(true) if p.is_dir()) if true else []
    skip = {base_path.resolve(), *(p.resolve() for p in true_folders)}
    if patterns:
        candidates = sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_dir()})
    else:
        candidates = model_folders(root)
    renames, found = dict(names or {}), []
    for folder in (p for p in candidates if p.resolve() not in skip):
        rel = _lab_path(root, folder, "expert")
        kind = _kind(folder)
        if kind is None:
            lines.append(f"# skipped {folder.relative_to(root)}: neither a PEFT adapter nor a full fine-tune")
            continue
        name = renames.pop(folder.name, folder.name).replace(".", "-")
        found.append((folder, kind, name))
        lines += [f"[[experts]]  # {'PEFT LoRA adapter' if kind == 'lora' else 'full fine-tune'}"]
        lines += [f"name = {toml_value(name)}", f"path = {toml_value(rel)}", ""]
    if not found:
        where = f"match {' '.join(patterns)!r}" if patterns else "are PEFT adapter folders or full fine-tunes"
        raise MixlabError(f"no experts under {root} {where} (PEFT adapter folders or full fine-tunes)")
    if renames:
        folders = ", ".join(f.name for f, _, _ in found)
        raise MixlabError(f"--name {next(iter(renames))}=…: no expert folder of that name; expert folders: {folders}")
    for path in sorted(p for p in root.glob(benchmarks) if p.is_file() and p.suffix == ".jsonl"):
        if path.stem.endswith("_dev"):
            continue  # a dev split: named as search_data by its test file below
        rel = _lab_path(root, path, "benchmark")  # inside the lab (a link out of it is refused) before it is read
        evaluator, why = _guess_evaluator(path)
        lines += [f"[[benchmarks]]  # {why}", f"name = {toml_value(path.stem.replace('.', '-'))}"]
        lines += [f"evaluator = {toml_value(evaluator)}", f"data = {toml_value(rel)}"]
        dev = path.with_name(f"{path.stem}_dev.jsonl")
        if dev.is_file():
            lines.append(f"search_data = {toml_value(_lab_path(root, dev, 'benchmark'))}  # what a search optimises on")
        lines.append("")
    lines += true_mixture_lines(root, true_folders, weights_from, {name: folder for folder, _, name in found})
    lines += _preset_lines(base_path, [kind for _, kind, _ in found])
    text = "\n".join(lines)
    return _write_manifest(root, text) if write else text


def model_folders(root: Path) -> list[Path]:
    """Every PEFT adapter folder or full fine-tune anywhere under ``root``, in path order: hidden folders and
    ``exports/`` are not searched, nor the inside of a model folder."""
    found = []
    for here, dirs, _ in os.walk(root):  # links are not followed: a linked model folder is listed, not entered
        folder = Path(here)
        if folder != root and _kind(folder) is not None:
            found.append(folder)
            dirs.clear()
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (folder == root and d == EXPORTS))
        found += [folder / d for d in dirs if (folder / d).is_symlink() and _kind(folder / d) is not None]
    return sorted(found)


def true_mixture_lines(
    root: Path, folders: list[Path], weights_from: str | None, expert_folders: dict[str, Path]
) -> list[str]:
    """``[[true_mixtures]]`` for checkpoints trained on mixtures, their weights from a CSV or JSON file
    (relative to the lab folder, or absolute): CSV with a header, the first column naming each checkpoint
    (its folder name or its path in the lab), one column per expert; JSON ``{"checkpoint": {"expert": w}}``.
    Weights are numbers or fractions ("1/3"), normalised to sum to 1 (example counts work as they are).
    Without a file, each checkpoint's LLaMA-Factory ``training_args.yaml`` is read (:func:`_llamafactory_mix`)."""
    experts = list(expert_folders)
    if not folders:
        if weights_from:
            raise MixlabError("--weights-from needs --true (a glob of the checkpoints trained on mixtures)")
        return []
    if weights_from:
        path = Path(weights_from) if Path(weights_from).is_absolute() else root / weights_from
        table = _read_weights(path, experts)
    else:
        path = Path(LLAMAFACTORY_ARGS)
        table = {f.name: _llamafactory_mix(f, expert_folders) for f in folders}
    lines = []
    for folder in folders:
        rel = _lab_path(root, folder, "true mixture")
        if _kind(folder) is None:
            raise MixlabError(f"--true: {rel} is neither a PEFT adapter nor a full fine-tune")
        key = next((k for k in (rel, folder.name) if k in table), None)
        if key is None:
            raise MixlabError(f"{path}: no weights for the true-mixture checkpoint {rel} (a row named {folder.name!r})")
        raw = table[key]
        total = math.fsum(raw.values())
        if not math.isfinite(total) or total <= 0 or any(w < 0 for w in raw.values()):
            raise MixlabError(f"{path}: the weights of {key!r} must be ≥ 0 with a positive sum, got {raw}")
        weights = {e: raw[e] / total for e in experts if raw.get(e, 0) > 0}
        how = f"weights from {path.name}" + ("" if abs(total - 1) < 1e-9 else f", normalised from {raw}")
        lines += [f"[[true_mixtures]]  # {how}", f"name = {toml_value(folder.name.replace('.', '-'))}"]
        lines += [f"path = {toml_value(rel)}", f"weights = {toml_value(weights)}", ""]
    return lines


LLAMAFACTORY_ARGS = "training_args.yaml"  # what LLaMA-Factory's board writes into a run's output folder


def _llamafactory_args(folder: Path) -> dict | None:
    import yaml

    file = folder / LLAMAFACTORY_ARGS
    if not file.is_file():
        return None
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise MixlabError(f"{file}: cannot read it as YAML: {e}") from None
    return data if isinstance(data, dict) else None


def _names(value) -> list[str]:
    return [v.strip() for v in (value.split(",") if isinstance(value, str) else value or []) if str(v).strip()]


def _llamafactory_mix(folder: Path, expert_folders: dict[str, Path]) -> dict[str, float]:
    """A true mixture's weights from the ``training_args.yaml`` LLaMA-Factory wrote beside it: its
    ``dataset`` list with ``interleave_probs`` (mix_strategy interleave_*); each dataset is the expert
    whose own training_args.yaml names it alone, or the expert of that name."""
    args = _llamafactory_args(folder)
    if args is None:
        raise MixlabError(
            f"--true: no weights for {folder.name}; give --weights-from FILE (CSV or JSON: each checkpoint's "
            f"weight per expert), or keep LLaMA-Factory's {LLAMAFACTORY_ARGS} in the checkpoint's folder"
        )
    datasets, probs = _names(args.get("dataset")), _names(args.get("interleave_probs"))
    if not str(args.get("mix_strategy", "concat")).startswith("interleave") or len(probs) != len(datasets):
        raise MixlabError(
            f"{folder / LLAMAFACTORY_ARGS}: datasets {datasets} were mixed by {args.get('mix_strategy', 'concat')!r} "
            "without one interleave_probs each, so their shares are the datasets' sizes; give --weights-from"
        )
    owner = {}
    for name, expert_folder in expert_folders.items():
        own = _names((_llamafactory_args(expert_folder) or {}).get("dataset"))
        owner.update({own[0]: name} if len(own) == 1 else {})
    weights = {}
    for dataset, p in zip(datasets, probs):
        expert = owner.get(dataset, dataset if dataset in expert_folders else None)
        if expert is None:
            raise MixlabError(
                f"{folder / LLAMAFACTORY_ARGS}: dataset {dataset!r} is no expert's (experts: "
                f"{', '.join(expert_folders)}); name the expert after it with --name, or give --weights-from"
            )
        try:
            weights[expert] = weights.get(expert, 0.0) + float(p)
        except ValueError:
            raise MixlabError(f"{folder / LLAMAFACTORY_ARGS}: interleave_probs {probs} are not all numbers") from None
    return weights


def _read_weights(path: Path, experts: list[str]) -> dict[str, dict[str, float]]:
    """checkpoint → {expert: weight} from a CSV or JSON file (see :func:`true_mixture_lines`)."""
    import csv

    from mixlab.simplex import weight_value

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MixlabError(f"--weights-from {path}: cannot read it: {e}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise MixlabError(f"{path}: not valid JSON: {e}") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise MixlabError(f'{path}: expected {{"checkpoint": {{"expert": weight, …}}, …}}')
        rows = {str(k): v for k, v in data.items()}
    elif path.suffix.lower() == ".csv":
        reader = csv.reader(text.splitlines())
        header = next(reader, None)
        if not header or len(header) < 2:
            raise MixlabError(f"{path}: a header row is needed: checkpoint, then one column per expert")
        rows = {r[0]: dict(zip(header[1:], r[1:])) for r in reader if r}
    else:
        raise MixlabError(f"--weights-from {path}: give a .csv or .json file")
    out = {}
    for key, weights in rows.items():
        unknown = [e for e in weights if e not in experts]
        if unknown:
            raise MixlabError(f"{path}: {key!r} names expert {unknown[0]!r}; experts: {', '.join(experts)}")
        try:
            out[key] = {e: float(weight_value(w)) if w not in ("", None) else 0.0 for e, w in weights.items()}
        except (TypeError, ValueError, ZeroDivisionError):
            raise MixlabError(f"{path}: the weights of {key!r} must be numbers or fractions, got {weights}") from None
    return out


def _preset_lines(base: Path, kinds: list[str]) -> list[str]:
    """A vision-language base's ``[merge] preset`` (mixlab.presets): ``lora`` when every expert is an adapter,
    else ``full``, with what it keeps at the base in a comment."""
    from mixlab.names import is_multimodal
    from mixlab.presets import PRESET_HELP

    try:
        config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(config, dict) or not is_multimodal(config):
        return []
    preset = "lora" if all(k == "lora" for k in kinds) else "full"
    return ["[merge]", f"preset = {toml_value(preset)}  # {PRESET_HELP[preset]}", ""]
