"""lm-evaluation-harness as an evaluator (``evaluator = "lm_eval"``, ``task``, ``include_path``).

The task comes from YAML inside the lab (``include_path``; lm-eval's own tasks are not indexed, so nothing
is looked up or downloaded), run on the in-memory merged model through lm-eval's HF wrapper, which takes
a loaded model. The benchmark's ``data`` file replaces the task's test split (so the file mixlab hashes
into the cache key is the file scored) and the datasets cache goes to the lab's ``.mixlab`` folder. lm-eval's
request cache stays off: it is keyed by the request, not the weights, and would serve one merge's answers
for another. The score is the task's first metric; its direction must match the benchmark's
(``lower_is_better``), which a run checks.

Task files are confined to the lab: before lm-eval sees the folder, :func:`task_files` walks every task
YAML it would index and everything those YAMLs pull in (``include:`` files and the ``.py`` files of
``!function`` tags, resolved exactly as lm-eval resolves them), and refuses any that lies outside the lab,
is a link out of it, or is a module lm-eval would import from Python's path. That whole closure is in
the cache key (:func:`task_digest`). Task Python files run as code, like a lab's plugins; lm-eval's Jinja
templates (``doc_to_text`` …) are rendered in Jinja's sandbox (:func:`sandbox_templates`).

Needs ``pip install -r requirements-lmeval.txt``; importing this module does not import lm-eval.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from mixlab.errors import EvaluationError, MixlabError

SPLIT = "test"


IGNORED_DIRS = {"__pycache__", ".ipynb_checkpoints"}  # folders lm-eval's task index skips (tasks/_index.py)


def _folder_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def folder_digest(folder: Path) -> str:
    """sha256 over a task folder's files (names and bytes): a YAML or helper edit changes the cache key."""
    h = hashlib.sha256()
    for f in _folder_files(folder):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _refuse(path: Path, line: int | None, what: str) -> EvaluationError:
    where = f"{path}, line {line}" if line else str(path)
    return EvaluationError(f"{where}: {what}; an lm-eval task may use only files inside the lab")


def _read_task_yaml(path: Path) -> tuple[object, list[tuple[str, int]], list[tuple[object, int | None]]]:
    """A task YAML as lm-eval's loader reads it (libyaml's safe loader plus ``!function``): its data, its
    ``!function`` names and its ``include`` values, each with its line."""
    import yaml

    base = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader

    class Loader(base):
        pass

    functions: list[tuple[str, int]] = []

    def function(loader, node):
        functions.append((loader.construct_scalar(node), node.start_mark.line + 1))
        return None

    Loader.add_constructor("!function", function)
    try:
        with open(path, "rb") as f:
            loader = Loader(f.read())
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except (OSError, yaml.YAMLError) as e:
        raise _refuse(path, None, f"not a task YAML mixlab can check ({type(e).__name__}: {e})") from None
    includes: list[tuple[object, int | None]] = []
    if isinstance(data, dict) and "include" in data:
        found = [v for k, v in node.value if getattr(k, "value", None) == "include"][-1:]
        items = found[0].value if found and isinstance(found[0], yaml.SequenceNode) else found
        values = data["include"] if isinstance(data["include"], list) else [data["include"]]
        lines = [n.start_mark.line + 1 for n in items] if len(items) == len(values) else [None] * len(values)
        includes = list(zip(values, lines))  # a line where the include is written plainly (not merged in)
    return data, functions, includes


def task_files(folder: Path, root: Path) -> list[Path]:
    """Every file lm-eval would read for the tasks in ``folder``: the folder's own files, then each YAML's
    ``include`` files and ``!function`` modules (recursively), resolved as lm-eval resolves them
    (``lm_eval.tasks._yaml_loader``: relative to the real folder of the YAML that names them; a function
    ``a.b.fn`` is the file ``a/b.py``, else the module ``a.b`` on Python's path). Raises EvaluationError
    naming the file, line and value of anything outside ``root`` (a path, or a link out of it), of a
    function that names no file (lm-eval would import a module from anywhere), and of an include cycle."""
    from mixlab.errors import ManifestError
    from mixlab.lab import confined

    root = Path(root).resolve()

    def inside(path: Path, at: Path, line: int | None, what: str) -> Path:
        try:
            return confined(root, path, what)
        except ManifestError as e:
            raise _refuse(at, line, str(e)) from None

    files = {inside(f, f, None, "task file"): None for f in _folder_files(folder)}
    todo = [
        (inside(p, p, None, "task YAML"), ())
        for p in sorted(folder.glob("**/*.yaml"), key=lambda p: p.as_posix())
        if not any(part in IGNORED_DIRS for part in p.parts)
    ]
    done: set[Path] = set()
    while todo:
        path, chain = todo.pop()
        if path in done:
            continue
        done.add(path)
        files[path] = None
        data, functions, includes = _read_task_yaml(path)
        for spec, line in functions:
            mod, _, _ = str(spec).rpartition(".")
            if not mod:
                raise _refuse(path, line, f"!function {spec!r} names no module (write file.function)")
            module = path.parent / f"{mod.replace('.', '/')}.py"
            if not module.resolve().exists():
                raise _refuse(
                    path, line, f"!function {spec!r}: no file {module}, so lm-eval would import module {mod!r} instead"
                )
            files[inside(module, path, line, f"!function {spec!r}:")] = None
        for inc, line in includes:
            if not isinstance(inc, str) or not inc:
                raise _refuse(path, line, f"include {inc!r} is not a file path")
            target = inside(path.parent / inc, path, line, f"include {inc!r} =")  # an absolute inc replaces the folder
            if target in chain or target == path:
                raise _refuse(path, line, f"include {inc!r} makes an include cycle")
            if not target.is_file():
                raise _refuse(path, line, f"include {inc!r}: no such file {target}")
            todo.append((target, (*chain, path)))
    return list(files)


def task_digest(folder: Path, root: Path) -> str:
    """The cache key's hash of an lm-eval task: its folder's files (:func:`folder_digest`) and, when its
    YAMLs include or import files elsewhere in the lab, those files' paths and bytes too."""
    folder = folder.resolve()
    elsewhere = [f for f in task_files(folder, root) if not f.is_relative_to(folder)]
    digest = folder_digest(folder)
    if not elsewhere:  # the whole closure is the folder: the key it always had
        return digest
    h = hashlib.sha256(digest.encode())
    for f in elsewhere:
        h.update(b"\0" + f.relative_to(Path(root).resolve()).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def sandbox_templates() -> None:
    """Render lm-eval's Jinja templates in Jinja's sandbox: lm-eval renders every template through one
    module-level environment (``lm_eval.utils.env``), replaced here by a SandboxedEnvironment with the
    same settings and filters, so a template cannot reach Python internals (``''.__class__…``)."""
    import lm_eval.utils as lm_utils
    from jinja2 import Environment
    from jinja2.sandbox import SandboxedEnvironment

    env = getattr(lm_utils, "env", None)
    if isinstance(env, SandboxedEnvironment):
        return
    if not isinstance(env, Environment):
        raise EvaluationError(
            "this lm-eval version renders templates some other way than lm_eval.utils.env; mixlab cannot sandbox "
            "them (use the lm-eval version requirements-lmeval.txt names)"
        )
    sandboxed = SandboxedEnvironment(
        loader=env.loader, undefined=env.undefined, keep_trailing_newline=env.keep_trailing_newline
    )
    sandboxed.filters.update(env.filters)
    lm_utils.env = sandboxed


def run(spec, model, tokenizer, device, batch_size: int, data: Path, include: Path | None, cache: Path, root: Path):
    """(score, metric, n) of ``model`` on ``spec``'s lm-eval task over ``data``; the task folder ``include``
    is checked (:func:`task_files`) to use nothing outside the lab folder ``root`` before lm-eval reads it."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the json builder needs no network; nothing else may
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise MixlabError(
            f"benchmark {spec.name!r} uses lm-evaluation-harness: pip install -r requirements-lmeval.txt"
        ) from None
    if include is not None:
        task_files(include, root)
    sandbox_templates()
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
