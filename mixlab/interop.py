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
import re
from collections.abc import Sequence
from pathlib import Path

from mixlab.errors import MixlabError
from mixlab.experts import ADAPTER_CONFIG
from mixlab.lab import EXPORTS, ManifestWriter, read_capped
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


def _lab_path(root: Path, path: Path, what: str) -> str:
    path = path.resolve()
    if not path.is_relative_to(root):
        raise MixlabError(f"{what} {path} is outside the lab folder {root}; a lab holds (or links) its models")
    return path.relative_to(root).as_posix() or "."


MAX_RECIPE_BYTES = 1 << 20  # a mergekit recipe is a few KB
LAB_DEPTH = 2  # how deep below a lab folder its models sit at most: <lab>/base, <lab>/experts/<name>


def _expert_name(path: Path) -> str:
    """A lab name for a model folder: its name with every character a name cannot hold written as ``-``."""
    return re.sub(r"[^A-Za-z0-9_\-]", "-", path.name)[:64] or "expert"


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


def _kind(folder: Path) -> str | None:
    if (folder / ADAPTER_CONFIG).is_file():
        return "lora"
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return "full"
    return None


MAX_FIRST_ROW = 1 << 20  # lab init reads at most this much of a JSONL file to guess its evaluator


def _guess_evaluator(path: Path) -> tuple[str, str]:
    """The evaluator a JSONL file's fields call for, and why (read from its first row, of at most
    :data:`MAX_FIRST_ROW` bytes: a one-line file of gigabytes is not read whole)."""
    try:
        with open(path, "rb") as f:
            line = f.readline(MAX_FIRST_ROW + 1)
        if len(line) > MAX_FIRST_ROW:
            raise MixlabError(
                f"{path}: the first row is longer than {MAX_FIRST_ROW} bytes; lab init reads at most that much to "
                "guess the evaluator (add this benchmark to lab.toml by hand)"
            )
        row = json.loads(line)
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


WORKSPACE_VAR = "MIXLAB_WORKSPACE"  # the folder a dashboard may make labs in (set by whoever starts it)


class NoWorkspace(MixlabError):
    """$MIXLAB_WORKSPACE is not set: the dashboard makes no lab anywhere."""


def workspace_folder(folder: str, workspace: str | None = None) -> Path:
    """The rule for making a lab from the dashboard: ``folder`` resolved, and accepted only inside the
    workspace (``workspace``, default $MIXLAB_WORKSPACE), since lab init lists folders and reads JSONL rows:
    a page reads and writes nothing outside what its operator allowed. Raises :class:`NoWorkspace` when
    there is no workspace, MixlabError when the folder is outside it."""
    workspace = os.environ.get(WORKSPACE_VAR) if workspace is None else workspace
    if not workspace:
        raise NoWorkspace(
            f"the dashboard makes labs only inside ${WORKSPACE_VAR}, which was not set when the app started "
            f"(`{WORKSPACE_VAR}=/path/to/labs streamlit run app.py`)"
        )
    root = Path(folder).expanduser().resolve() if folder else None
    if root is None or not root.is_relative_to(Path(workspace).expanduser().resolve()):
        raise MixlabError(f"{folder or '(no folder)'} is not inside the workspace {workspace}")
    return root


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
    :func:`add_true_mixtures`). ``write=False``: return the text."""
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
    doc = ManifestWriter()
    doc.comment(f"written by mixlab lab init from {root}")
    doc.set("name", _expert_name(root))
    doc.set("base", base_rel)
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
            doc.comment(f"skipped {folder.relative_to(root)}: neither a PEFT adapter nor a full fine-tune")
            continue
        name = renames.pop(folder.name, None) or _expert_name(folder)
        found.append((folder, kind, name))
        doc.blank()
        doc.item("experts", "PEFT LoRA adapter" if kind == "lora" else "full fine-tune")
        doc.set("name", name)
        doc.set("path", rel)
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
        doc.blank()
        doc.item("benchmarks", why)
        doc.set("name", _expert_name(Path(path.stem)))
        doc.set("evaluator", evaluator)
        doc.set("data", rel)
        dev = path.with_name(f"{path.stem}_dev.jsonl")
        if dev.is_file():
            doc.set("search_data", _lab_path(root, dev, "benchmark"), "what a search optimises on")
    add_true_mixtures(doc, root, true_folders, weights_from, {name: folder for folder, _, name in found})
    add_preset(doc, base_path, [kind for _, kind, _ in found])
    return doc.write(root) if write else doc.text()


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


def add_true_mixtures(
    doc: ManifestWriter, root: Path, folders: list[Path], weights_from: str | None, expert_folders: dict[str, Path]
) -> None:
    """``[[true_mixtures]]`` for checkpoints trained on mixtures, their weights from a CSV or JSON file
    (relative to the lab folder, or absolute): CSV with a header, the first column naming each checkpoint
    (its folder name or its path in the lab), one column per expert; JSON ``{"checkpoint": {"expert": w}}``.
    Weights are numbers or fractions ("1/3"), normalised to sum to 1 (example counts work as they are).
    Without a file, each checkpoint's LLaMA-Factory ``training_args.yaml`` is read (:func:`_llamafactory_mix`)."""
    experts = list(expert_folders)
    if not folders:
        if weights_from:
            raise MixlabError("--weights-from needs --true (a glob of the checkpoints trained on mixtures)")
        return
    if weights_from:
        path = Path(weights_from) if Path(weights_from).is_absolute() else root / weights_from
        table = _read_weights(path, experts)
    else:
        path = Path(LLAMAFACTORY_ARGS)
        table = {f.name: _llamafactory_mix(f, expert_folders) for f in folders}
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
        doc.blank()
        doc.item("true_mixtures", how)
        doc.set("name", _expert_name(folder))
        doc.set("path", rel)
        doc.set("weights", weights)


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
    """checkpoint → {expert: weight} from a CSV or JSON file (see :func:`add_true_mixtures`)."""
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


def add_preset(doc: ManifestWriter, base: Path, kinds: list[str]) -> None:
    """A vision-language base's ``[merge] preset`` (mixlab.presets): ``lora`` when every expert is an adapter,
    else ``full``, with what it keeps at the base in a comment."""
    from mixlab.names import is_multimodal
    from mixlab.presets import PRESET_HELP

    try:
        config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(config, dict) or not is_multimodal(config):
        return
    preset = "lora" if all(k == "lora" for k in kinds) else "full"
    doc.blank()
    doc.table("merge")
    doc.set("preset", preset, PRESET_HELP[preset])
