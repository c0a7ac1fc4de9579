"""The lab manifest (``lab.toml``): one validated description of a base model, its experts, the
benchmarks to score them on, and models truly trained on mixtures. Every path in it is resolved inside
the lab's folder by :meth:`Lab.resolve`; nothing else in mixlab joins manifest paths by hand."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from mixlab.errors import ManifestError
from mixlab.simplex import TOLERANCE, Mixture

MANIFEST = "lab.toml"
BUILTIN_EVALUATORS = ("lm_loss", "exact_match", "choice")

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class ExpertSpec(_Strict):
    name: Name = Field(description="unique name, shown as a simplex vertex")
    path: str = Field(description="a PEFT LoRA adapter dir or a full fine-tune dir, inside the lab")


class BenchmarkSpec(_Strict):
    name: Name
    evaluator: str = Field(description="lm_loss | exact_match | choice | package.module:function")
    data: str = Field(description="JSONL file inside the lab")
    max_new_tokens: int = Field(32, ge=1, le=4096, description="exact_match: tokens generated at most")
    stop: tuple[str, ...] = Field(("\n",), description="exact_match: generation stops at these strings")
    length_normalize: bool = Field(False, description="choice: score options by mean token log-prob")
    limit: int | None = Field(None, ge=1, description="evaluate only the first N examples")

    @field_validator("evaluator")
    @classmethod
    def _known_evaluator(cls, v: str) -> str:
        if v in BUILTIN_EVALUATORS or (":" in v and all(v.split(":", 1))):
            return v
        raise ValueError(
            f"unknown evaluator {v!r}; use one of {', '.join(BUILTIN_EVALUATORS)} or 'package.module:function'"
        )


class TrueMixtureSpec(_Strict):
    name: Name | None = Field(None, description="defaults to the weights, e.g. ocr50_chart50")
    weights: dict[str, float] = Field(description="expert name → weight; missing experts are 0")
    path: str | None = Field(None, description="checkpoint trained on this mixture (adapter or full)")
    scores: dict[str, float] | None = Field(None, description="benchmark name → score, if no checkpoint")

    @model_validator(mode="after")
    def _path_or_scores(self) -> TrueMixtureSpec:
        if (self.path is None) == (self.scores is None):
            raise ValueError("give exactly one of 'path' (a checkpoint) or 'scores'")
        return self


class MergeDefaults(_Strict):
    method: str = Field("linear", description="default merge method")
    params: dict[str, float | int | bool] = Field(default_factory=dict, description="its parameters")
    exclude: tuple[str, ...] = Field((), description="glob patterns of tensors kept at the base value")


class Manifest(_Strict):
    name: Name
    description: str = ""
    base: str = Field(description="HF model dir: config.json + *.safetensors")
    experts: list[ExpertSpec] = Field(min_length=1)
    benchmarks: list[BenchmarkSpec] = Field(default_factory=list)
    true_mixtures: list[TrueMixtureSpec] = Field(default_factory=list)
    merge: MergeDefaults = Field(default_factory=MergeDefaults)

    @model_validator(mode="after")
    def _cross_fields(self) -> Manifest:
        for field, items in (("experts", self.experts), ("benchmarks", self.benchmarks)):
            seen: set[str] = set()
            for i, item in enumerate(items):
                if item.name in seen:
                    raise ValueError(f"{field}[{i}].name: duplicate name {item.name!r}")
                seen.add(item.name)
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
            if abs(total - 1) > TOLERANCE:
                raise ValueError(f"{where}.weights: weights must sum to 1, got {total:.9g}")
            for bench in tm.scores or {}:
                if bench not in benchmarks:
                    raise ValueError(f"{where}.scores: unknown benchmark {bench!r}")
            label = tm.name or weights_label(tm.weights, experts)
            if label in names:
                raise ValueError(f"{where}: duplicate true mixture {label!r}")
            names.add(label)
        return self


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
        for i, t in enumerate(manifest.true_mixtures):
            if t.path is not None:
                self.resolve(t.path, f"true_mixtures[{i}].path")

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

    def resolve(self, rel: str, field: str = "path", want_file: bool = False) -> Path:
        """Resolve a manifest path inside the lab folder, or raise ManifestError naming the field."""
        p = Path(rel)
        full = (p if p.is_absolute() else self.root / p).resolve()
        if not full.is_relative_to(self.root):
            raise ManifestError(f"{self.root / MANIFEST}: {field} = {rel!r} points outside the lab folder {self.root}")
        if not full.exists():
            raise ManifestError(f"{self.root / MANIFEST}: {field} = {rel!r}: no such file or folder ({full})")
        if want_file and not full.is_file():
            raise ManifestError(f"{self.root / MANIFEST}: {field} = {rel!r} is a folder, expected a file")
        return full


def load_lab(path: str | Path) -> Lab:
    """Open a lab from its folder or its ``lab.toml``, validating everything it names."""
    path = Path(path)
    file = path / MANIFEST if path.is_dir() else path
    if not file.is_file():
        raise ManifestError(f"no lab manifest at {file}; a lab is a folder with a {MANIFEST}")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
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
