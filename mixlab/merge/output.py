"""Export folders: written whole or not at all, and never over a folder mixlab did not write.

A merge is written into a hidden temp folder beside the target and moved into place only when it is
complete. Every export carries :data:`EXPORT_MARKER` (its provenance), and ``overwrite`` replaces only a
folder holding one: an export can never delete a user's own folder. Temp folders left by a killed
process are removed by the next export to the same place (:mod:`mixlab.staging`, shared with the demo labs).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mixlab import staging
from mixlab.errors import MergeError

EXPORT_MARKER = "mixlab_merge.json"  # provenance of the merge; its presence marks a mixlab export


def is_export(folder: Path) -> bool:
    """True for a folder mixlab exported (it holds the marker file, not a link to one)."""
    marker = Path(folder) / EXPORT_MARKER
    return marker.is_file() and not marker.is_symlink()


def start(out: Path, overwrite: bool, within: Path | None = None) -> tuple[Path, Path]:
    """Check ``out`` and make the temp folder to write into: returns (out resolved, temp folder).

    Raises MergeError when ``out`` is a file, a link, the current folder or an ancestor of it, a
    non-empty folder without ``overwrite``, or a non-empty folder that is not a mixlab export; with
    ``within`` (a lab's exports folder), also when ``out`` or any folder on the way leads out of it."""
    out = Path(out)
    if out.is_symlink():
        raise MergeError(f"output {out} is a symbolic link; give a real folder path")
    if within is not None:
        from mixlab.errors import ManifestError
        from mixlab.lab import confined

        try:
            out = confined(Path(within).parent, out, "output")
        except ManifestError as e:
            raise MergeError(str(e)) from None
    out = out.resolve()
    if out.exists() and not out.is_dir():
        raise MergeError(f"output {out} is a file, not a folder; choose a folder path")
    if Path.cwd().resolve().is_relative_to(out):
        raise MergeError(f"output {out} is the current folder or contains it; choose a new folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise MergeError(
                f"output folder {out} exists and is not empty: choose another name, or replace it (tick "
                "'Replace an earlier export of this name' on the Merge page; --overwrite on the command line)"
            )
        if not is_export(out):
            raise MergeError(
                f"refusing to replace {out}: it is not a mixlab export (no {EXPORT_MARKER}); choose a new folder"
            )
    try:
        tmp = staging.stage(out)
    except OSError as e:
        raise MergeError(f"cannot write into {out.parent}: {e.strerror or e}") from None
    return out, tmp


def finish(tmp: Path, out: Path, provenance: dict) -> Path:
    """Write the marker, then move the finished temp folder into place; an old export at ``out`` is
    removed only after the new one is whole."""
    (tmp / EXPORT_MARKER).write_text(json.dumps(provenance, indent=2, sort_keys=True))
    (tmp / FACTS).write_text(json.dumps(provenance, indent=2, sort_keys=True))
    if "base" in provenance:  # an export from a lab: a Hugging Face model card that explains it
        (tmp / "README.md").write_text(model_card(provenance, adapter=(tmp / "adapter_config.json").exists()))
    kept = "; the earlier export is unchanged" if out.exists() else ""
    try:
        return staging.publish(tmp, out)
    except OSError as e:
        raise MergeError(f"cannot move the finished export into place at {out}: {e.strerror or e}{kept}") from None


FACTS = "mixlab.json"  # the same facts as the marker, under the name tools look for


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # "org/name", as the Hub spells a repository


def hub_id(name_or_path: str | None) -> str | None:
    """``name_or_path`` when it reads as a Hugging Face Hub repository id ("org/name"), else None: a local
    folder ("base", "/models/x", "./x") is no valid ``base_model`` in a model card."""
    if not name_or_path or name_or_path.startswith((".", "/", "~")) or not _HUB_ID.match(name_or_path):
        return None
    return name_or_path


def model_card(p: dict, adapter: bool) -> str:
    """A Hugging Face model card (metadata block + text) from an export's provenance: base, experts with
    their fingerprints, method and parameters, weights, the cached scores of this merge, mixlab's version.
    ``base_model`` is written only when the base's config names a Hub repository (:func:`hub_id`)."""
    hub = hub_id(p["base"].get("name_or_path"))
    meta = [
        "---",
        f"library_name: {'peft' if adapter else 'transformers'}",
        *([f"base_model: {json.dumps(hub)}"] if hub else []),
        "tags:",
        "- mixlab",
        "- merge",
        f"- {p['method']}",
        "---",
        "",
    ]
    weights = ", ".join(f"{n}={w:g}" for n, w in p["weights"].items())
    params = " ".join(f"--param {k}={v}" for k, v in sorted(p["params"].items()))
    lines = [
        f"# {p['lab']}: {p['method']} merge at {weights}",
        "",
        f"θ = merge_{p['method']}(θ₀, τ; w) of the lab's experts, written by mixlab {p['mixlab']}"
        + (" as a PEFT adapter." if adapter else " as a full model."),
        "",
        f"- **Base**: `{p['base']['path']}` (fingerprint `{p['base']['fingerprint'][:16]}`)",
        f"- **Method**: {p['method']} {json.dumps(p['params'], sort_keys=True)}"
        + (f"; excluded tensors: {', '.join(p['exclude'])}" if p["exclude"] else ""),
        "",
        "| expert | weight | fingerprint |",
        "|---|---|---|",
        *(f"| {e['name']} | {p['weights'][e['name']]:g} | `{e['fingerprint'][:16]}` |" for e in p["expert_info"]),
        "",
    ]
    if p["scores"]:
        lines += ["Scores of this merge cached in the lab (mixlab's evaluators):", ""]
        lines += ["| benchmark | metric | score | direction | n |", "|---|---|---|---|---|"]
        lines += [
            f"| {s['benchmark']} | {s['metric']} | {s['score']:.4f} | {'↑' if s['higher_is_better'] else '↓'} | {s['n']} |"
            for s in p["scores"]
        ]
    else:
        lines.append("No scores of this merge were cached when it was exported.")
    lines += [
        "",
        "Reproduce with:",
        "",
        "```bash",
        f"python -m mixlab merge LAB --weights {weights.replace(', ', ',')} --method {p['method']} {params}".rstrip()
        + (" --adapter" if adapter else "")
        + " --out OUT",
        "```",
        "",
        f"The same facts, as JSON: `{FACTS}`.",
        "",
    ]
    return "\n".join(meta + lines)


def abort(tmp: Path) -> None:
    staging.discard(tmp)
