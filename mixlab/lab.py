"""A lab: a folder and its manifest (``lab.toml``, validated by the schema in :mod:`mixlab.manifest`): one
description of a base model, its experts, the benchmarks to score them on, and models truly trained on
mixtures. Every path in it is resolved inside the lab's folder by :meth:`Lab.resolve` (:func:`confined`);
nothing else in mixlab joins manifest paths by hand."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from pydantic import ValidationError

from mixlab.errors import ManifestError
from mixlab.manifest import MANIFEST, BenchmarkSpec, Manifest, TrueMixtureSpec, _describe, weights_label
from mixlab.simplex import Mixture

MAX_MANIFEST_BYTES = 1 << 20  # a lab.toml is a few KB; anything bigger is not one
LABS_DIR = Path(__file__).resolve().parents[1] / "cache"  # the labs shipped with mixlab (git-tracked)
EXPORTS = "exports"  # <lab>/exports/<name>: where the dashboard writes merged models


def confined(root: Path, path: str | Path, what: str) -> Path:
    """``path`` (relative to ``root``, or absolute) resolved, if it stays inside ``root``: the one check
    of every path mixlab reads or writes under a lab. Every component is looked at: a link (dangling or
    not) that leads out of the folder is refused, for reads and writes alike, so no symlinked ``.mixlab``,
    cache file or ``exports`` can make mixlab write outside the lab. Raises ManifestError naming ``what``."""
    root = Path(root).resolve()
    if "\0" in str(path):
        raise ManifestError(f"{what} {str(path)!r} contains a NUL byte")
    p = Path(path)
    full = p if p.is_absolute() else root / p
    try:
        if full.is_relative_to(root):
            cur = root
            for part in full.relative_to(root).parts:
                cur = cur / part
                if cur.is_symlink() and not cur.resolve().is_relative_to(root):
                    raise ManifestError(
                        f"{what} {str(path)!r} points outside the lab folder {root}: {cur} is a link to "
                        f"{cur.resolve()}; mixlab reads and writes only inside the lab"
                    )
        resolved = full.resolve()
    except (OSError, RuntimeError) as e:  # a link loop, a name too long
        raise ManifestError(f"{what} {str(path)!r}: cannot resolve it inside {root}: {e}") from None
    if not resolved.is_relative_to(root):
        raise ManifestError(f"{what} {str(path)!r} points outside the lab folder {root}")
    return resolved


class Lab:
    """A validated manifest bound to its folder."""

    def __init__(self, root: Path, manifest: Manifest):
        self.root = root.resolve()
        self.manifest = manifest
        # check every named path now, so a bad lab fails when opened, not mid-sweep
        self.resolve(manifest.base, "base")
        for i, e in enumerate(manifest.experts):
            self.resolve(e.path, f"experts[{i}].path")
        for i, b in enumerate(manifest.benchmarks):
            self.resolve(b.data, f"benchmarks[{i}].data", want_file=True)
            if b.include_path is not None:
                self.resolve(b.include_path, f"benchmarks[{i}].include_path")
        for i, t in enumerate(manifest.true_mixtures):
            if t.path is not None:
                self.resolve(t.path, f"true_mixtures[{i}].path")
            for j, p in enumerate(t.paths or ()):
                self.resolve(p, f"true_mixtures[{i}].paths[{j}]")
        self.plugin_dirs = [self.resolve(d, f"plugins[{i}]") for i, d in enumerate(manifest.plugins)]

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def expert_names(self) -> list[str]:
        return [e.name for e in self.manifest.experts]

    @property
    def benchmarks(self) -> list[BenchmarkSpec]:
        return list(self.manifest.benchmarks)

    def benchmark(self, name: str) -> BenchmarkSpec:
        for b in self.manifest.benchmarks:
            if b.name == name:
                return b
        known = ", ".join(b.name for b in self.manifest.benchmarks) or "none"
        raise ManifestError(f"lab {self.name!r} has no benchmark {name!r}; benchmarks: {known}")

    def true_mixture_name(self, spec: TrueMixtureSpec) -> str:
        return spec.name or weights_label(spec.weights, self.expert_names)

    def true_mixture_weights(self, spec: TrueMixtureSpec) -> Mixture:
        return Mixture.of(self.expert_names, [spec.weights.get(n, 0.0) for n in self.expert_names])

    @property
    def exports(self) -> Path:
        """The lab's exports folder, the only place the dashboard writes merged models: ``<lab>/exports``,
        except for the labs shipped in the git-tracked ``cache/`` folder, whose exports go to
        ``exports/<lab>`` beside it (so nothing is ever written among tracked files). Resolved by
        :func:`confined`: an ``exports`` link that leads out of the lab is refused."""
        if self.root.parent == LABS_DIR.resolve():
            return confined(LABS_DIR.parent, Path(EXPORTS) / self.root.name, "the exports folder")
        return self.inside(EXPORTS, "the exports folder")

    def export_path(self, name: str) -> Path:
        """``<exports>/<name>`` (see :attr:`exports`) for an export *name* (letters, digits, ``_ . -``; not a path)."""
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}", name or ""):
            raise ManifestError(
                f"export name {name!r} must be 1-100 letters, digits, '_', '.' or '-' (a name, not a path), "
                "not starting with '.' or '-'"
            )
        exports = self.exports
        return confined(exports.parent, Path(exports.name) / name, f"export {name!r}")

    def inside(self, rel: str | Path, what: str) -> Path:
        """A path mixlab itself reads or writes under the lab (its cache, a study, exports), by :func:`confined`."""
        return confined(self.root, rel, what)

    def resolve(self, rel: str, field: str = "path", want_file: bool = False) -> Path:
        """Resolve a manifest path inside the lab folder (links inside it followed), or raise ManifestError
        naming the field."""
        full = confined(self.root, rel, f"{self.root / MANIFEST}: {field} =")
        if not full.exists():
            raise ManifestError(f"{self.root / MANIFEST}: {field} = {rel!r}: no such file or folder ({full})")
        if want_file and not full.is_file():
            raise ManifestError(f"{self.root / MANIFEST}: {field} = {rel!r} is a folder, expected a file")
        return full


def read_capped(file: Path, limit: int, what: str, error: type[Exception] = ManifestError) -> bytes:
    """The bytes of ``file``, at most ``limit`` of them: a manifest or a recipe is small, and a file larger
    than that is not one (it is refused before it is parsed). Errors name the file and ``what`` it should be."""
    try:
        with open(file, "rb") as f:
            raw = f.read(limit + 1)
    except OSError as e:
        raise error(f"{file}: cannot read {what}: {e.strerror or e}") from None
    if len(raw) > limit:
        raise error(f"{file}: larger than {limit} bytes; not {what}")
    return raw


def load_lab(path: str | Path) -> Lab:
    """Open a lab from its folder or its ``lab.toml``, validating everything it names. Only a file
    named ``lab.toml`` (of at most 1 MiB) is read: pointing at any other file reveals nothing of it."""
    if "\0" in str(path):
        raise ManifestError(f"lab path {str(path)!r} contains a NUL byte")
    path = Path(path)
    try:
        file = path / MANIFEST if path.is_dir() else path
        found = file.name == MANIFEST and file.is_file()
    except OSError as e:  # a name too long for the filesystem, a folder we may not enter
        raise ManifestError(f"lab path {str(path)[:200]!r}: cannot be opened ({e.strerror or e})") from None
    if not found:
        raise ManifestError(f"no lab manifest at {file}; a lab is a folder with a {MANIFEST}")
    if file.is_symlink():  # it could name any TOML file, whose values a validation error would echo
        raise ManifestError(
            f"{file} is a symbolic link; a lab's {MANIFEST} must be a regular file (open the folder it points to)"
        )
    raw = read_capped(file, MAX_MANIFEST_BYTES, "a lab manifest")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{file}: not valid TOML: {e}") from None
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as e:
        raise ManifestError(f"{file}: " + "; ".join(_describe(err) for err in e.errors())) from None
    return Lab(file.parent, manifest)
