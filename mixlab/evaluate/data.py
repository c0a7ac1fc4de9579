"""A benchmark's examples: its JSONL read once (with the hash of the bytes parsed, for the cache key) and
every row checked against its evaluator's fields; errors name the file, the line and the field."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from mixlab.errors import EvaluationError
from mixlab.lab import BenchmarkSpec

REQUIRED = {"exact_match": ("prompt", "answer"), "choice": ("prompt", "choices", "label")}


def read_examples(path: Path, spec: BenchmarkSpec) -> list[dict]:
    """Read and check a benchmark's JSONL; errors name the file, line and field."""
    return read_benchmark(path, spec)[0]


def read_benchmark(path: Path, spec: BenchmarkSpec) -> tuple[list[dict], str]:
    """(examples, sha256 of the bytes they were parsed from): one read, so a cache key built from the
    hash always describes the examples that were scored."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise EvaluationError(f"{path}: cannot read benchmark {spec.name!r}: {e.strerror or e}") from None
    examples = []
    for i, line in enumerate(raw.split(b"\n"), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise EvaluationError(f"{path}:{i}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        if not text.strip():
            continue
        try:
            ex = json.loads(text)
        except json.JSONDecodeError as e:
            raise EvaluationError(f"{path}:{i}: not valid JSON: {e}") from None
        if not isinstance(ex, dict):
            raise EvaluationError(f"{path}:{i}: each line must be a JSON object")
        _check_example(ex, spec.evaluator, f"{path}:{i}")
        examples.append(ex)
        if spec.limit and len(examples) >= spec.limit:
            break
    if not examples:
        raise EvaluationError(f"{path}: benchmark {spec.name!r} has no examples")
    return examples, hashlib.sha256(raw).hexdigest()


def _check_example(ex: dict, evaluator: str, where: str) -> None:
    if "image" in ex and (evaluator != "exact_match" or not isinstance(ex["image"], str)):
        raise EvaluationError(f"{where}: 'image' must be a path inside the lab (a string), on exact_match rows")
    if evaluator == "lm_loss":
        if not (
            isinstance(ex.get("text"), str)
            or (isinstance(ex.get("prompt"), str) and isinstance(ex.get("completion", ex.get("answer")), str))
        ):
            raise EvaluationError(f"{where}: lm_loss needs 'text', or 'prompt' with 'completion' (or 'answer')")
        return
    for field in REQUIRED.get(evaluator, ()):
        if field not in ex:
            raise EvaluationError(f"{where}: {evaluator} needs field {field!r}")
    if evaluator in REQUIRED and not isinstance(ex["prompt"], str):
        raise EvaluationError(f"{where}: 'prompt' must be a string, got {ex['prompt']!r}")
    if evaluator == "exact_match" and (
        isinstance(ex["answer"], bool) or not isinstance(ex["answer"], (str, int, float))
    ):
        raise EvaluationError(f"{where}: 'answer' must be a string or a number, got {ex['answer']!r}")
    if evaluator == "choice":
        choices, label = ex["choices"], ex["label"]
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise EvaluationError(f"{where}: 'choices' must be a list of at least two strings")
        if not isinstance(label, int) or not 0 <= label < len(choices):
            raise EvaluationError(f"{where}: 'label' must be an index into 'choices', got {label!r}")


def has_images(examples: Sequence[dict]) -> bool:
    """Whether a benchmark's rows are image questions (for a vision-language base's processor)."""
    return bool(examples) and "image" in examples[0]
