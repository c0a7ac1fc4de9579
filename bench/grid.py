"""A whole grid of proxies: the 66-mixture grid (K=3, step 0.1) on the demo lab's LoRA experts.

    python bench/grid.py [--lab cache/demo-k3] [--examples 16,64] [--batch N] [--repeats 3]

For (a) lm_loss and (b) exact_match on one benchmark, times in one run:
- floor: the evaluation forward passes alone (the base model, no merge, every mixture's examples, which
  are tokenised once beforehand);
- engine: mixlab's engine with a fresh cache (materialised in-memory merges, or the batched LoRA path);
- naive, in one process: merge → save → load → evaluate per mixture, with mixlab's own streaming merge
  and imports already paid (the most generous naive loop);
- naive, as pipelines run it (the seed paper's, mergekit + an eval harness): per mixture one merge
  process (``python -m mixlab merge``, faster than ``mergekit-yaml``) and one evaluation process that
  loads the saved folder with transformers and runs the same evaluator.
Both naive loops are timed on a subset of mixtures and scaled to the grid (their cost per mixture is
flat). Prints medians of --repeats runs (the pipeline loop: one run) and their ratios; nothing asserts a
time.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mixlab.engine import Engine  # noqa: E402
from mixlab.evaluate import prepare, read_examples, run_benchmark  # noqa: E402
from mixlab.lab import load_lab  # noqa: E402
from mixlab.simplex import Mixture, grid_from_step  # noqa: E402
from mixlab.store import Store  # noqa: E402

_runs = itertools.count()


def floor_time(model, tok, bench, examples, n_mixtures: int, batch: int, repeats: int) -> float:
    """Median time of the evaluation forward passes alone, once per mixture: no merge, no cache, and the
    examples tokenised once beforehand (as the engine keeps them)."""
    items = prepare(tok, bench, examples)

    def once() -> float:
        t0 = time.perf_counter()
        for _ in range(n_mixtures):
            run_benchmark(model, tok, bench, examples, torch.device("cpu"), batch_size=batch, items=items)
        return time.perf_counter() - t0

    return statistics.median(once() for _ in range(repeats))


def sweep_time(lab, grid, bench: str, path: str, batch: int, repeats: int, tmp: Path) -> float:
    """Median time of the engine sweeping the grid with a fresh cache (every score computed)."""

    def once() -> float:
        eng = Engine(lab, Store(tmp / f"{bench}-{path}-{next(_runs)}.sqlite"), device="cpu", batch_size=batch)
        eng.model  # noqa: B018 - load outside the timing, as the app does once
        t0 = time.perf_counter()
        eng.sweep(grid, "linear", benchmarks=[bench], path=path)
        return time.perf_counter() - t0

    return statistics.median(once() for _ in range(repeats))


def naive_in_process(eng: Engine, grid, b, examples, batch: int, n: int, repeats: int, tmp: Path) -> float:
    """Median seconds per mixture of merge → save → load → evaluate, all in this process."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def once() -> float:
        t = time.perf_counter()
        for m in grid[:n]:
            out = eng.export(m, tmp / f"naive-{next(_runs)}", "linear")
            mdl = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
            tk = AutoTokenizer.from_pretrained(out, local_files_only=True)
            run_benchmark(mdl, tk, b, examples, torch.device("cpu"), batch_size=batch)
        return (time.perf_counter() - t) / n

    return statistics.median(once() for _ in range(repeats))


def naive_processes(lab_dir: Path, grid, bench: str, batch: int, n: int, tmp: Path) -> float:
    """Seconds per mixture of one merge process and one evaluation process."""
    t = time.perf_counter()
    for m in grid[:n]:
        out = tmp / f"proc-{next(_runs)}"
        weights = ",".join(str(w) for w in m.weights)
        merge = [sys.executable, "-m", "mixlab", "merge", str(lab_dir), "--weights", weights, "--out", str(out)]
        subprocess.run(merge, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
        evaluate = [sys.executable, __file__, "--eval-folder", str(out), "--lab", str(lab_dir), "--bench", bench]
        subprocess.run(evaluate + ["--batch", str(batch)], check=True, capture_output=True)
    return (time.perf_counter() - t) / n


def eval_folder(folder: str, lab_dir: str, bench: str, batch: int) -> None:
    """The evaluation process of the pipeline loop: a saved model folder scored by the lab's evaluator."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lab = load_lab(lab_dir)
    b = lab.benchmark(bench)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    r = run_benchmark(model, tok, b, read_examples(lab.resolve(b.data), b), torch.device("cpu"), batch_size=batch)
    print(r.score)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lab", default=str(Path(__file__).resolve().parents[1] / "cache" / "demo-k3"))
    ap.add_argument("--examples", default="16,64", help="examples per benchmark, comma-separated (small benchmarks)")
    ap.add_argument("--batch", type=int, default=None, help="rows per pass (default: the engine's, from free memory)")
    ap.add_argument("--naive-mixtures", type=int, default=6, help="mixtures timed for the in-process naive loop")
    ap.add_argument("--process-mixtures", type=int, default=2, help="mixtures timed for the pipeline loop")
    ap.add_argument("--repeats", type=int, default=3, help="timings per path; medians are printed")
    ap.add_argument("--eval-folder", help=argparse.SUPPRESS)  # internal: the pipeline loop's eval process
    ap.add_argument("--bench", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.eval_folder:
        return eval_folder(args.eval_folder, args.lab, args.bench, args.batch)
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="mixlab-grid-"))
    try:
        src = load_lab(args.lab)
        names = src.expert_names
        grid = [Mixture.of(names, w) for w in grid_from_step(len(names), 0.1)]
        if args.batch is None:
            args.batch = Engine(src, Store(tmp / "probe.sqlite"), device="cpu").batch_size
        print(
            f"lab {src.name}: {len(names)} LoRA experts, {len(grid)} mixtures, batch {args.batch}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.repeats}"
        )
        print(
            f"\n{'benchmark':<10} {'examples':>8} {'floor s':>8} {'engine s':>9} {'path':<12} {'×floor':>7} "
            f"{'per-mixture s':>14} {'batched ×':>10} {'naive s':>8} {'naive ×':>8} {'pipeline s':>11} {'pipeline ×':>11}"
        )
        for n_examples in (int(x) for x in args.examples.split(",")):
            # a copy of the lab whose benchmarks are limited to n_examples
            lab_dir = tmp / f"lab-{n_examples}"
            shutil.copytree(src.root, lab_dir, ignore=shutil.ignore_patterns(".mixlab", "evaluations.jsonl"))
            toml = (lab_dir / "lab.toml").read_text()
            (lab_dir / "lab.toml").write_text(
                toml.replace("[[benchmarks]]\n", f"[[benchmarks]]\nlimit = {n_examples}\n")
            )
            lab = load_lab(lab_dir)
            for bench in ("rev-loss", "rev"):
                row = measure(lab, lab_dir, grid, bench, args, tmp)
                print(f"{bench:<10} {n_examples:>8} {row}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(lab, lab_dir: Path, grid, bench: str, args, tmp: Path) -> str:
    """One table row: every timing of one benchmark, and the ratios."""
    b = lab.benchmark(bench)
    probe = Engine(lab, Store(tmp / f"probe-{next(_runs)}.sqlite"), device="cpu", batch_size=args.batch)
    model, tok = probe.model, probe.tokenizer
    examples = read_examples(lab.resolve(b.data), b)
    run_benchmark(model, tok, b, examples, torch.device("cpu"), batch_size=args.batch)  # warm up

    floor = floor_time(model, tok, b, examples, len(grid), args.batch, args.repeats)

    def timed(path: str) -> float:
        return sweep_time(lab, grid, bench, path, args.batch, args.repeats, tmp)

    auto_path = probe.choose_path("linear", b, len(grid))
    engine = timed(auto_path)
    per_mixture = timed("materialize") if auto_path == "batched" else engine
    batched = timed("batched") if auto_path != "batched" else engine

    eng = Engine(lab, Store(tmp / f"naive-{next(_runs)}.sqlite"), device="cpu")
    naive = naive_in_process(eng, grid, b, examples, args.batch, args.naive_mixtures, args.repeats, tmp) * len(grid)
    pipeline = naive_processes(lab_dir, grid, bench, args.batch, args.process_mixtures, tmp) * len(grid)
    return (
        f"{floor:>8.2f} {engine:>9.2f} {auto_path:<12} {engine / floor:>7.2f} {per_mixture:>14.2f} "
        f"{per_mixture / batched:>10.2f} {naive:>8.1f} {naive / engine:>8.1f} {pipeline:>11.0f} {pipeline / engine:>11.0f}"
    )


if __name__ == "__main__":
    main()
