"""A whole grid of proxies: the 66-mixture grid (K=3, step 0.1) on the demo lab's LoRA experts.

    python bench/grid.py [--lab cache/demo-k3] [--examples 64] [--batch 256]

For (a) lm_loss and (b) exact_match on one benchmark, times in one run:
- floor: the evaluation forward passes alone (the base model, no merge, every mixture's examples);
- engine: mixlab's engine with a fresh cache (materialised in-memory merges, or the batched LoRA path);
- naive: merge → save → load → evaluate per mixture (as with mergekit + a separate eval), on a subset
  of mixtures and scaled to the grid (its cost per mixture is flat).
Prints medians of --repeats runs and their ratios; nothing asserts a time.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mixlab.engine import Engine  # noqa: E402
from mixlab.evaluate import read_examples, run_benchmark  # noqa: E402
from mixlab.lab import load_lab  # noqa: E402
from mixlab.simplex import Mixture, grid_from_step  # noqa: E402
from mixlab.store import Store  # noqa: E402

_runs = itertools.count()


def floor_time(model, tok, bench, examples, n_mixtures: int, batch: int, repeats: int) -> float:
    """Median time of the evaluation forward passes alone, once per mixture: no merge, no cache."""

    def once() -> float:
        t0 = time.perf_counter()
        for _ in range(n_mixtures):
            run_benchmark(model, tok, bench, examples, torch.device("cpu"), batch_size=batch)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lab", default=str(Path(__file__).resolve().parents[1] / "cache" / "demo-k3"))
    ap.add_argument("--examples", type=int, default=64, help="examples per benchmark (a small benchmark)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--naive-mixtures", type=int, default=6, help="mixtures timed for the naive loop")
    ap.add_argument("--repeats", type=int, default=3, help="timings per path; medians are printed")
    args = ap.parse_args()
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="mixlab-grid-"))
    try:
        src = load_lab(args.lab)
        # a copy of the lab whose benchmarks are limited to --examples
        lab_dir = tmp / "lab"
        shutil.copytree(src.root, lab_dir, ignore=shutil.ignore_patterns(".mixlab", "evaluations.jsonl"))
        toml = (
            (lab_dir / "lab.toml").read_text().replace("[[benchmarks]]\n", f"[[benchmarks]]\nlimit = {args.examples}\n")
        )
        (lab_dir / "lab.toml").write_text(toml)
        lab = load_lab(lab_dir)
        names = lab.expert_names
        grid = [Mixture.of(names, w) for w in grid_from_step(len(names), 0.1)]
        print(
            f"lab {src.name}: {len(names)} LoRA experts, {len(grid)} mixtures, {args.examples} examples, "
            f"batch {args.batch}, torch {torch.__version__}, {torch.get_num_threads()} threads"
        )
        print(
            f"\n{'benchmark':<18} {'floor s':>8} {'engine s':>9} {'path':<12} {'×floor':>7} {'per-mixture s':>14} "
            f"{'batched ×':>10} {'naive s':>8} {'naive/engine':>12}"
        )
        for bench in ("rev-loss", "rev"):
            b = lab.benchmark(bench)
            probe = Engine(lab, Store(tmp / f"probe-{bench}.sqlite"), device="cpu", batch_size=args.batch)
            model, tok = probe.model, probe.tokenizer
            examples = read_examples(lab.resolve(b.data), b)
            run_benchmark(model, tok, b, examples, torch.device("cpu"), batch_size=args.batch)  # warm up

            floor = floor_time(model, tok, b, examples, len(grid), args.batch, args.repeats)

            def timed(path: str, bench: str = bench) -> float:
                return sweep_time(lab, grid, bench, path, args.batch, args.repeats, tmp)

            auto_path = probe.choose_path("linear", b, len(grid))
            engine = timed(auto_path)
            per_mixture = timed("materialize") if auto_path == "batched" else engine
            batched = timed("batched") if auto_path != "batched" else engine

            eng = Engine(lab, Store(tmp / f"{bench}-naive.sqlite"), device="cpu")
            t = time.perf_counter()
            for i, m in enumerate(grid[: args.naive_mixtures]):
                from transformers import AutoModelForCausalLM, AutoTokenizer

                out = eng.export(m, tmp / f"naive-{bench}-{i}", "linear")
                mdl = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
                tk = AutoTokenizer.from_pretrained(out, local_files_only=True)
                run_benchmark(mdl, tk, b, examples, torch.device("cpu"), batch_size=args.batch)
            naive = (time.perf_counter() - t) / args.naive_mixtures * len(grid)
            print(
                f"{bench:<18} {floor:>8.2f} {engine:>9.2f} {auto_path:<12} {engine / floor:>7.2f} {per_mixture:>14.2f} "
                f"{per_mixture / batched:>10.2f} {naive:>8.1f} {naive / engine:>12.1f}"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
