"""The model folders of a lab as a written manifest names them: what a folder holds (a PEFT adapter or a full
model), its path inside the lab, the name it gets, every model folder under a root, and a vision-language
base's ``[merge] preset``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from mixlab.checkpoint import ADAPTER_CONFIG
from mixlab.errors import MixlabError
from mixlab.lab import EXPORTS
from mixlab.manifest_writer import ManifestWriter


def _lab_path(root: Path, path: Path, what: str) -> str:
    path = path.resolve()
    if not path.is_relative_to(root):
        raise MixlabError(f"{what} {path} is outside the lab folder {root}; a lab holds (or links) its models")
    return path.relative_to(root).as_posix() or "."


def _expert_name(path: Path) -> str:
    """A lab name for a model folder: its name with every character a name cannot hold written as ``-``."""
    return re.sub(r"[^A-Za-z0-9_\-]", "-", path.name)[:64] or "expert"


def _kind(folder: Path) -> str | None:
    if (folder / ADAPTER_CONFIG).is_file():
        return "lora"
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return "full"
    return None


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
