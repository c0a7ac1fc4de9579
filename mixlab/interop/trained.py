"""True mixtures from training runs: the mixture each run was trained on, read from a weights file or from
LLaMA-Factory's recorded arguments (:func:`add_true_mixtures`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from mixlab.errors import MixlabError
from mixlab.interop.models import _expert_name, _kind, _lab_path
from mixlab.manifest_writer import ManifestWriter


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
