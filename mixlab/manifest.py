"""The manifest's schema: ``lab.toml`` validated at the boundary (pydantic, ``extra="forbid"``, no NaN/inf, experts
as a list with unique names): experts, benchmarks, true mixtures and the ``[merge]`` defaults. :mod:`mixlab.lab`
reads a file into it; :mod:`mixlab.manifest_writer` writes one."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from mixlab.errors import MixlabError
from mixlab.simplex import tolerance, weight_value

MANIFEST = "lab.toml"


BUILTIN_EVALUATORS = ("lm_loss", "exact_match", "choice")


LM_EVAL = "lm_eval"  # lm-evaluation-harness (mixlab/harness.py): direction from lower_is_better, checked on each run


LOWER_IS_BETTER = ("lm_loss",)  # built-in evaluators whose score is better when lower


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


def weights_label(weights: dict[str, float], order: list[str]) -> str:
    """A mixture's name from its weights, e.g. {ocr: 0.5, chart: 0.5} → 'ocr50_chart50' (zeros left out)."""
    return "_".join(f"{n}{round(100 * weights[n])}" for n in order if weights.get(n, 0) > 0)


def _describe(err: dict) -> str:
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"unknown key {loc!r}"
    where = f"{loc}: " if loc else ""
    if err["type"] in ("missing",) or loc == "" or "input" not in err or isinstance(err["input"], dict):
        return f"{where}{msg}"
    return f"{where}{msg} (got {err['input']!r})"
