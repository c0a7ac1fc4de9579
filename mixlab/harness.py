"""lm-evaluation-harness as an evaluator (``evaluator = "lm_eval"``, ``task``, ``include_path``).

The task comes from YAML inside the lab (``include_path``; lm-eval's own tasks are not indexed, so nothing
is looked up or downloaded), run on the in-memory merged model through lm-eval's HF wrapper, which takes
a loaded model. The benchmark's ``data`` file replaces the task's test split (so the file mixlab hashes
into the cache key is the file scored) and the datasets cache goes to the lab's ``.mixlab`` folder. lm-eval's
request cache stays off: it is keyed by the request, not the weights, and would serve one merge's answers
for another. The score is the task's first metric; its direction must match the benchmark's
(``lower_is_better``), which a run checks.

Needs ``pip install -r requirements-lmeval.txt``; importing this module does not import lm-eval.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mixlab.errors import EvaluationError, MixlabError

SPLIT = "test"


def folder_digest(folder: Path) -> str:
    """sha256 over a task folder's files (names and bytes): a YAML or helper edit changes the cache key."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def run(spec, model, tokenizer, device, batch_size: int, data: Path, include: Path | None, cache: Path):
    """(score, metric, n) of ``model`` on ``spec``'s lm-eval task over ``data``."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the json builder needs no network; nothing else may
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise MixlabError(
            f"benchmark {spec.name!r} uses lm-evaluation-harness: pip install -r requirements-lmeval.txt"
        ) from None
    manager = TaskManager(include_path=str(include) if include else None, include_defaults=False)
    if spec.task not in manager.all_tasks:
        where = f"in {include}" if include else "(no include_path given)"
        raise EvaluationError(f"benchmark {spec.name!r}: no lm-eval task {spec.task!r} {where}")
    override = {
        "task": spec.task,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {SPLIT: str(data)}, "cache_dir": str(cache)},
        "test_split": SPLIT,
    }
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(device))
    try:
        out = simple_evaluate(
            model=lm,
            tasks=[{"group": "mixlab", "task": [override]}],  # a group entry overrides a registered task's fields
            task_manager=manager,
            limit=spec.limit,
            use_cache=None,
            cache_requests=False,
            log_samples=False,
            bootstrap_iters=0,
        )
    except MixlabError:
        raise
    except Exception as e:  # the harness's own failure: one line, nothing stored
        raise EvaluationError(
            f"benchmark {spec.name!r}: lm-eval task {spec.task!r} failed: {type(e).__name__}: {e}"
        ) from e
    directions = out["higher_is_better"][spec.task]
    metric = next(iter(directions))
    key = next(k for k in out["results"][spec.task] if k.split(",")[0] == metric)
    if bool(directions[metric]) != spec.higher_is_better:
        fix = "lower_is_better = true" if not directions[metric] else "lower_is_better = false (or remove it)"
        raise EvaluationError(
            f"benchmark {spec.name!r}: lm-eval's {metric} has higher_is_better={directions[metric]}, the lab says the "
            f"opposite; set {fix} on this benchmark in lab.toml"
        )
    return float(out["results"][spec.task][key]), metric, int(out["n-samples"][spec.task]["effective"])
