"""The lab manifest (``lab.toml``): one validated description of a base model, its experts, the
benchmarks to score them on, and models truly trained on mixtures. Every path in it is resolved inside
the lab's folder by :meth:`Lab.resolve`; nothing else in mixlab joins manifest paths by hand."""

from __future__ import annotations

import math
import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mixlab.errors import ManifestError, MixlabError
from mixlab.simplex import Mixture, tolerance, weight_value

MANIFEST = "lab.toml"
MAX_MANIFEST_BYTES = 1 << 20  # a lab.toml is a few KB; anything bigger is not one
BUILTIN_EVALUATORS = ("lm_loss", "exact_match", "choice")
LM_EVAL = "lm_eval"  # lm-evaluation-harness (mixlab/harness.py): direction from lower_is_better, checked on each run
LOWER_IS_BETTER = ("lm_loss",)  # built-in evaluators whose score is better when lower
LABS_DIR = Path(__file__).resolve().parents[1] / "cache"  # the labs shipped with mixlab (git-tracked)
EXPORTS = "exports"  # <lab>/exports/<name>: where the dashboard writes merged models

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class ExpertSpec(_Strict):
    name: Name = Field(description="unique name, shown as a simplex vertex")
    path: str = Field(description="a PEFT LoRA adapter dir or a full fine-tune dir, inside the lab")


def _fraction(v):
    """lab.toml weights may be fractions written as strings ("1/3"): exact thirds sum to 1."""
    if isinstance(v, str):
        try:
            return weight_value(v)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"weight {v!r} is not a number or a fraction like '1/3'") from None
    return v


class BenchmarkSpec(_Strict):
    name: Name
    evaluator: str = Field(description="lm_loss | exact_match | choice | lm_eval | package.module:function")
    data: str = Field(description="JSONL file inside the lab (for lm_eval: the file its task reads as its test split)")
    max_new_tokens: int = Field(32, ge=1, le=4096, description="exact_match: tokens generated at most")
    stop: tuple[str, ...] = Field(("\n",), description="exact_match: generation stops at these strings")
    length_normalize: bool = Field(False, description="choice: score options by mean token log-prob")
    limit: int | None = Field(None, ge=1, description="evaluate only the first N examples")
    lower_is_better: bool | None = Field(
        None, description="plugin evaluators: true when a lower score is better (built-ins know their own)"
    )
    search_data: str | None = Field(
        None, description="JSONL inside the lab that `search` optimises on (dev); `data` stays for reporting (test)"
    )
    task: str | None = Field(None, description="lm_eval: the lm-evaluation-harness task name")
    include_path: str | None = Field(None, description="lm_eval: a folder inside the lab with the task's YAML")

    @field_validator("stop")
    @classmethod
    def _nonempty_stops(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(s == "" for s in v):
            raise ValueError("stop strings must be non-empty (an empty one would stop before the first token)")
        return v

    @model_validator(mode="after")
    def _direction_for_plugins(self) -> BenchmarkSpec:
        if self.lower_is_better is not None and self.evaluator in BUILTIN_EVALUATORS:
            raise ValueError(f"lower_is_better is for plugin evaluators; {self.evaluator} knows its own direction")
        if self.evaluator == LM_EVAL and not self.task:
            raise ValueError('evaluator "lm_eval" needs task = "<an lm-evaluation-harness task name>"')
        if self.evaluator != LM_EVAL and (self.task or self.include_path):
            raise ValueError('task and include_path are for evaluator = "lm_eval"')
        return self

    @property
    def higher_is_better(self) -> bool:
        """The one answer to "is a higher score better?" that every table, mean and report asks."""
        if self.evaluator in BUILTIN_EVALUATORS:
            return self.evaluator not in LOWER_IS_BETTER
        return not self.lower_is_better

    @field_validator("evaluator")
    @classmethod
    def _known_evaluator(cls, v: str) -> str:
        if v in BUILTIN_EVALUATORS or v == LM_EVAL or (":" in v and all(v.split(":", 1))):
            return v
        raise ValueError(
            f"unknown evaluator {v!r}; use one of {', '.join(BUILTIN_EVALUATORS)}, {LM_EVAL} or 'package.module:function'"
        )


class TrueMixtureSpec(_Strict):
    name: Name | None = Field(None, description="defaults to the weights, e.g. ocr50_chart50")
    weights: dict[str, Annotated[float, BeforeValidator(_fraction)]] = Field(
        description='expert name → weight (a number or a fraction like "1/3"); missing experts are 0'
    )
    path: str | None = Field(None, description="checkpoint trained on this mixture (adapter or full)")
    paths: list[str] | None = Field(
        None,
        description="replicates: ≥ 2 checkpoints trained on this mixture (seeds), in order; replicate 1 is the "
        "first. They measure the noise ceiling (how well two seeds of the true model rank each other)",
    )
    scores: dict[str, float] | None = Field(None, description="benchmark name → score, if no checkpoint")

    @model_validator(mode="after")
    def _path_or_scores(self) -> TrueMixtureSpec:
        if sum(x is not None for x in (self.path, self.paths, self.scores)) != 1:
            raise ValueError("give exactly one of 'path' (a checkpoint), 'paths' (replicates) or 'scores'")
        if self.paths is not None:
            if len(self.paths) < 2:
                raise ValueError(f"paths lists replicates: give at least 2, or one checkpoint as path = {self.paths!r}")
            repeated = sorted({p for p in self.paths if self.paths.count(p) > 1})
            if repeated:
                raise ValueError(f"paths: {repeated[0]!r} is listed twice; each replicate is its own checkpoint")
        return self

    @property
    def checkpoints(self) -> tuple[str, ...]:
        """The checkpoint paths of this mixture, replicate 1 first: ``(path,)``, ``paths``, or () for scores."""
        return (self.path,) if self.path is not None else tuple(self.paths or ())


class MergeDefaults(_Strict):
    method: str = Field("linear", description="default merge method")
    params: dict[str, float | int | bool] = Field(
        default_factory=dict, description="its parameters; they apply wherever a parameter is not given"
    )
    exclude: tuple[str, ...] = Field((), description="glob patterns of tensors kept at the base value")
    preset: Literal["lora", "full"] | None = Field(
        None,
        description="vision-language presets of tensors kept at the base, by the base's model class "
        "(mixlab.presets; added to exclude): lora | full",
    )

    @model_validator(mode="after")
    def _known_method_and_params(self) -> MergeDefaults:
        from mixlab.merge.methods import get_method  # pure kernels and their registry: no I/O

        try:
            get_method(self.method).resolve(self.params)
        except MixlabError as e:
            raise ValueError(str(e)) from None
        return self


class Manifest(_Strict):
    name: Name
    description: str = ""
    base: str = Field(description="HF model dir: config.json + *.safetensors")
    experts: list[ExpertSpec] = Field(min_length=1)
    benchmarks: list[BenchmarkSpec] = Field(default_factory=list)
    true_mixtures: list[TrueMixtureSpec] = Field(default_factory=list)
    merge: MergeDefaults = Field(default_factory=MergeDefaults)
    plugins: list[str] = Field(
        default_factory=list, description="folders inside the lab that plugin evaluators are imported from"
    )

    @model_validator(mode="after")
    def _cross_fields(self) -> Manifest:
        for field, items in (("experts", self.experts), ("benchmarks", self.benchmarks)):
            seen: dict[str, str] = {}
            for i, item in enumerate(items):
                folded = item.name.casefold()  # names become file and column names: 'OCR' and 'ocr' collide
                if folded in seen:
                    what = (
                        "duplicate name" if seen[folded] == item.name else f"name equal up to case to {seen[folded]!r}:"
                    )
                    raise ValueError(f"{field}[{i}].name: {what} {item.name!r}")
                seen[folded] = item.name
        experts = [e.name for e in self.experts]
        benchmarks = {b.name for b in self.benchmarks}
        names: set[str] = set()
        for i, tm in enumerate(self.true_mixtures):
            where = f"true_mixtures[{i}]"
            for expert, w in tm.weights.items():
                if expert not in experts:
                    raise ValueError(f"{where}.weights: unknown expert {expert!r}; experts: {', '.join(experts)}")
                if not math.isfinite(w) or w < 0:
                    raise ValueError(f"{where}.weights.{expert}: weight must be finite and ≥ 0, got {w}")
            total = math.fsum(tm.weights.values())
            if abs(total - 1) > tolerance(len(tm.weights)):
                raise ValueError(f"{where}.weights: weights must sum to 1, got {total:.9g}")
            for bench in tm.scores or {}:
                if bench not in benchmarks:
                    raise ValueError(f"{where}.scores: unknown benchmark {bench!r}")
            label = tm.name or weights_label(tm.weights, experts)
            if label in names:
                raise ValueError(f"{where}: duplicate true mixture {label!r}")
            names.add(label)
        return self


def toml_value(value) -> str:
    """A value as lab.toml writes it (strings, integers, finite floats, booleans, lists and inline tables),
    every character a string holds escaped where TOML (or a reader) would not take it literally: quotes,
    backslashes, newlines and every other control or invisible character. Raises ManifestError for what
    TOML cannot hold (NaN, infinities, unpaired surrogates from undecodable file names, other types)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ManifestError(f"cannot write {value!r} into lab.toml: TOML values here are finite numbers")
        return repr(value)  # the shortest text that reads back as the same float; TOML reads Python's form
    if isinstance(value, str):
        return '"' + "".join(_toml_char(ch, value) for ch in value) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise ManifestError(f"cannot write a {type(value).__name__} ({value!r}) into lab.toml")


def _toml_char(ch: str, whole: str) -> str:
    if ch in '"\\':
        return "\\" + ch
    if ch.isprintable() or ch == " ":
        return ch
    code = ord(ch)
    if 0xD800 <= code <= 0xDFFF:  # an undecodable byte of a file name (surrogateescape): not text TOML can hold
        raise ManifestError(f"cannot write {ascii(whole)} into lab.toml: it is not valid Unicode; rename it")
    return f"\\u{code:04X}" if code <= 0xFFFF else f"\\U{code:08X}"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_value(str(key))


def comment_text(text: str) -> str:
    """``text`` made safe for a ``#`` comment: one line, every non-printable character (newlines, carriage
    returns, other controls, undecodable bytes) written as its escape, so nothing after it can become TOML."""
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii") for ch in text)


class ManifestWriter:
    """The one writer of ``lab.toml`` (demo builds, ``lab init``, ``lab from-mergekit``): keys are
    mixlab's own names, every value goes through :func:`toml_value` and every comment through
    :func:`comment_text`, the text is parsed back and must equal what was meant, the manifest must
    validate, and the file is created atomically and only where nothing (not even a dangling link) is."""

    def __init__(self) -> None:
        self.data: dict = {}
        self._lines: list[str] = []
        self._table = self.data

    def comment(self, text: str) -> None:
        self._lines.append(f"# {comment_text(text)}")

    def blank(self) -> None:
        self._lines.append("")

    def set(self, key: str, value, comment: str | None = None) -> None:
        """``key = value`` in the current table (the top level, or the last :meth:`table` / :meth:`item`)."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or key in self._table:
            raise ManifestError(f"lab.toml writer: bad or repeated key {key!r} (a mixlab bug)")
        self._table[key] = value
        self._lines.append(f"{key} = {toml_value(value)}" + (f"  # {comment_text(comment)}" if comment else ""))

    def table(self, name: str, comment: str | None = None) -> None:
        """Start ``[name]``: what :meth:`set` writes next goes into it."""
        self._table = self.data.setdefault(name, {})
        self._lines.append(f"[{name}]" + (f"  # {comment_text(comment)}" if comment else ""))

    def item(self, name: str, comment: str | None = None) -> None:
        """Start a new ``[[name]]`` entry (experts, benchmarks, true_mixtures)."""
        self._table = {}
        self.data.setdefault(name, []).append(self._table)
        self._lines.append(f"[[{name}]]" + (f"  # {comment_text(comment)}" if comment else ""))

    def text(self) -> str:
        """The file's text, after checking that it parses back to exactly the values that were set."""
        text = "\n".join(self._lines) + "\n"
        try:
            parsed = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ManifestError(
                f"the lab.toml mixlab wrote does not parse ({e}); nothing was written (a mixlab bug)"
            ) from None
        if parsed != self.data:
            raise ManifestError("the lab.toml mixlab wrote reads back differently; nothing was written (a mixlab bug)")
        return text

    def write(self, root: Path) -> Path:
        """Validate the manifest against ``root`` (every path it names inside, existing), then create
        ``root/lab.toml`` atomically. Never replaces anything: an existing file, folder or link (dangling
        ones included, whose target would be created outside the lab) is an error."""
        root = Path(root).resolve()
        text = self.text()
        try:
            Lab(root, Manifest.model_validate(self.data))
        except ValidationError as e:
            errors = "; ".join(_describe(err) for err in e.errors())
            raise ManifestError(
                f"the lab.toml written for {root} does not validate, so it was not written: {errors}"
            ) from None
        target = root / MANIFEST
        if os.path.lexists(target):
            what = "is a link" if target.is_symlink() else "exists"
            raise ManifestError(f"{target} {what}; move it away first (mixlab never overwrites a lab manifest)")
        fd, tmp = tempfile.mkstemp(prefix=".lab.toml.", dir=root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.link(tmp, target)  # atomic, and fails if anything (a dangling link too) is already there
        except FileExistsError:
            raise ManifestError(
                f"{target} exists; move it away first (mixlab never overwrites a lab manifest)"
            ) from None
        except OSError as e:
            raise ManifestError(f"cannot write {target}: {e.strerror or e}") from None
        finally:
            os.unlink(tmp)
        return target


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


def weights_label(weights: dict[str, float], order: list[str]) -> str:
    """A mixture's name from its weights, e.g. {ocr: 0.5, chart: 0.5} → 'ocr50_chart50' (zeros left out)."""
    return "_".join(f"{n}{round(100 * weights[n])}" for n in order if weights.get(n, 0) > 0)


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


def _describe(err: dict) -> str:
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"unknown key {loc!r}"
    where = f"{loc}: " if loc else ""
    if err["type"] in ("missing",) or loc == "" or "input" not in err or isinstance(err["input"], dict):
        return f"{where}{msg}"
    return f"{where}{msg} (got {err['input']!r})"
