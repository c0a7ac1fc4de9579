"""Evaluator plugins, ``package.module:function``: imported from the lab's ``plugins`` folders or installed
packages (never from the current folder or the app's folder), called as ``function(model, tokenizer,
examples, device)``, their result (a float, or a dict with ``score`` and ``metric``) checked."""

from __future__ import annotations

import importlib
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from mixlab.errors import EvaluationError, MixlabError
from mixlab.evaluate.batches import FiniteLogits
from mixlab.lab import BenchmarkSpec

_IMPORT_LOCK = threading.Lock()


def _untrusted_paths() -> set[str]:
    """sys.path entries a plugin is never imported from: the current folder and the running script's
    folder (``python -m mixlab`` run inside a lab, or the app's own folder under ``streamlit run``)."""
    out = {os.path.realpath(os.getcwd())}
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if main:
        out.add(os.path.realpath(os.path.dirname(os.path.abspath(main))))
    return out


def load_plugin(target: str, plugin_dirs: Sequence[Path] = ()) -> Callable:
    """Import ``package.module:function`` from ``plugin_dirs`` (the lab's ``plugins`` folders) or from
    installed packages; sys.path entries for the current folder and the script's folder are left out."""
    module_name, _, fn_name = target.partition(":")
    with _IMPORT_LOCK:
        saved = sys.path[:]
        bad = _untrusted_paths()
        sys.path[:] = [str(d) for d in plugin_dirs] + [
            p for p in saved if p not in ("", ".") and os.path.realpath(p) not in bad
        ]
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            where = "the lab's plugins folders or installed packages" if plugin_dirs else "installed packages"
            raise EvaluationError(
                f"evaluator {target!r}: cannot import {module_name!r} from {where}: {e} (list a folder inside the "
                "lab in lab.toml's plugins = [...], or install the package)"
            ) from None
        except Exception as e:  # the module's own code failed on import
            raise EvaluationError(
                f"evaluator {target!r}: importing {module_name!r} raised {type(e).__name__}: {e}"
            ) from None
        finally:
            sys.path[:] = saved
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise EvaluationError(f"evaluator {target!r}: {module_name} has no function {fn_name!r}")
    return fn


def run_plugin(spec: BenchmarkSpec, model, tokenizer, examples, device, plugin_dirs) -> tuple[float, str]:
    fn = load_plugin(spec.evaluator, plugin_dirs)
    try:
        with FiniteLogits(model):
            result = fn(model, tokenizer, examples, device)
    except MixlabError:
        raise
    except Exception as e:  # the plugin's own failure: one clear line, the evaluation fails, nothing is stored
        raise EvaluationError(f"evaluator {spec.evaluator!r} raised {type(e).__name__}: {e}") from None
    metric = "score"
    if isinstance(result, dict):
        if "score" not in result:
            raise EvaluationError(f"evaluator {spec.evaluator!r} returned a dict without 'score'")
        metric = str(result.get("metric", "score"))
        said = result.get("higher_is_better")
        if said is not None and bool(said) != spec.higher_is_better:
            fix = "lower_is_better = true" if not said else "lower_is_better = false (or remove it)"
            raise EvaluationError(
                f"benchmark {spec.name!r}: evaluator {spec.evaluator!r} says higher_is_better={bool(said)}, but the "
                f"lab says the opposite; set {fix} on this benchmark in lab.toml"
            )
        result = result["score"]
    if isinstance(result, bool):
        raise EvaluationError(f"evaluator {spec.evaluator!r} returned {result!r}, not a number")
    try:
        return float(result), metric
    except (TypeError, ValueError):
        raise EvaluationError(f"evaluator {spec.evaluator!r} returned {result!r}, not a number") from None
