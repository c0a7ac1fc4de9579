"""A ``lab.toml`` written from a folder of checkpoints and JSONL (:func:`init_lab`), each JSONL file's evaluator
guessed from its first row; and the one folder a dashboard may make labs in (:func:`workspace_folder`)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from mixlab.errors import MixlabError
from mixlab.interop.models import _expert_name, _kind, _lab_path, add_preset, model_folders
from mixlab.interop.trained import add_true_mixtures
from mixlab.manifest_writer import ManifestWriter

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
