"""A whole grid of proxies: the 66-mixture grid (K=3, step 0.1) on the demo lab's LoRA experts.

    python bench/grid.py [--lab cache/demo-k3] [--examples 16,64] [--batch N] [--repeats 3] [--device cpu|cuda]

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
flat). Every path is timed --repeats times, interleaved; prints medians of the times and of the paired ratios
(the pipeline loop: one run); nothing asserts a time. ``--device cuda`` runs every path on the GPU (the
engine in bf16, as it runs there; CUDA synchronised before each clock read).
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
from mixlab.demo import DEMO_LAB  # noqa: E402
from mixlab.engine import Engine  # noqa: E402
from mixlab.evaluate import prepare, read_examples, run_benchmark  # noqa: E402
from mixlab.lab import load_lab  # noqa: E402
from mixlab.scoring import proxy  # noqa: E402
from mixlab.simplex import Mixture, grid_from_step  # noqa: E402
from mixlab.store import Store  # noqa: E402

_runs = itertools.count()
DEVICE = torch.device("cpu")  # set from --device in main()


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def floor_once(model, tok, bench, examples, items, n_mixtures: int, batch: int) -> float:
    """The evaluation forward passes alone, once per mixture: no merge, no cache, and the examples
    tokenised once beforehand (as the engine keeps them)."""
    sync()
    t0 = time.perf_counter()
    for _ in range(n_mixtures):
        run_benchmark(model, tok, bench, examples, DEVICE, batch_size=batch, items=items)
    sync()
    return time.perf_counter() - t0


def sweep_once(lab, grid, bench: str, path: str, batch: int, tmp: Path) -> float:
    """The engine sweeping the grid with a fresh cache (every score computed)."""
    eng = Engine(lab, Store(tmp / f"{bench}-{path}-{next(_runs)}.sqlite"), device=str(DEVICE), batch_size=batch)
    eng.model  # noqa: B018 - load outside the timing, as the app does once
    sync()
    t0 = time.perf_counter()
    eng.sweep(grid, "linear", benchmarks=[bench], path=path)
    sync()
    return time.perf_counter() - t0


def naive_once(eng: Engine, grid, b, examples, batch: int, n: int, tmp: Path) -> float:
    """The grid's time at the measured cost per mixture of merge → save → load → evaluate, in this process."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t = time.perf_counter()
    for m in grid[:n]:
        out = eng.export(m, tmp / f"naive-{next(_runs)}", "linear")
        mdl = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval().to(DEVICE)
        tk = AutoTokenizer.from_pretrained(out, local_files_only=True)
        run_benchmark(mdl, tk, b, examples, DEVICE, batch_size=batch)
    sync()
    return (time.perf_counter() - t) / n * len(grid)


def naive_processes(lab_dir: Path, grid, bench: str, batch: int, n: int, tmp: Path) -> float:
    """Seconds per mixture of one merge process and one evaluation process."""
    t = time.perf_counter()
    for m in grid[:n]:
        out = tmp / f"proc-{next(_runs)}"
        weights = ",".join(str(w) for w in m.weights)
        merge = [sys.executable, "-m", "mixlab", "merge", str(lab_dir), "--weights", weights, "--out", str(out)]
        subprocess.run(merge, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
        evaluate = [sys.executable, __file__, "--eval-folder", str(out), "--lab", str(lab_dir), "--bench", bench]
        evaluate += ["--batch", str(batch), "--device", str(DEVICE)]
        subprocess.run(evaluate, check=True, capture_output=True)
    return (time.perf_counter() - t) / n


def eval_folder(folder: str, lab_dir: str, bench: str, batch: int) -> None:
    """The evaluation process of the pipeline loop: a saved model folder scored by the lab's evaluator."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lab = load_lab(lab_dir)
    b = lab.benchmark(bench)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval().to(DEVICE)
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    r = run_benchmark(model, tok, b, read_examples(lab.resolve(b.data), b), DEVICE, batch_size=batch)
    print(r.score)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lab", default=str(DEMO_LAB))
    ap.add_argument("--examples", default="16,64", help="examples per benchmark, comma-separated (small benchmarks)")
    ap.add_argument("--batch", type=int, default=None, help="rows per pass (default: the engine's, from free memory)")
    ap.add_argument("--naive-mixtures", type=int, default=6, help="mixtures timed for the in-process naive loop")
    ap.add_argument("--process-mixtures", type=int, default=2, help="mixtures timed for the pipeline loop")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved timings per path; medians are printed")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: where every path runs")
    ap.add_argument("--eval-folder", help=argparse.SUPPRESS)  # internal: the pipeline loop's eval process
    ap.add_argument("--bench", help=argparse.SUPPRESS)
    args = ap.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if args.eval_folder:
        return eval_folder(args.eval_folder, args.lab, args.bench, args.batch)
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="mixlab-grid-"))
    try:
        src = load_lab(args.lab)
        names = src.expert_names
        grid = [Mixture.of(names, w) for w in grid_from_step(len(names), 0.1)]
        if args.batch is None:
            args.batch = Engine(src, Store(tmp / "probe.sqlite"), device=str(DEVICE)).batch_size
        where = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else f"{torch.get_num_threads()} threads"
        print(
            f"lab {src.name}: {len(names)} LoRA experts, {len(grid)} mixtures, batch {args.batch}, "
            f"torch {torch.__version__}, {DEVICE}: {where}; medians of {args.repeats}"
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
    probe = Engine(lab, Store(tmp / f"probe-{next(_runs)}.sqlite"), device=str(DEVICE), batch_size=args.batch)
    model, tok = probe.model, probe.tokenizer
    examples = read_examples(lab.resolve(b.data), b)
    run_benchmark(model, tok, b, examples, DEVICE, batch_size=args.batch)  # warm up

    items = prepare(tok, b, examples)
    auto_path = proxy.choose_path(probe, probe.method("linear"), b, len(grid))
    other = "materialize" if auto_path == "batched" else "batched"
    naive_engine = Engine(lab, Store(tmp / f"naive-{next(_runs)}.sqlite"), device=str(DEVICE))
    runs: dict[str, list[float]] = {"floor": [], auto_path: [], other: [], "naive": []}
    for _ in range(args.repeats):  # interleaved: a drift in the machine's speed hits every column alike
        runs["floor"].append(floor_once(model, tok, b, examples, items, len(grid), args.batch))
        runs[auto_path].append(sweep_once(lab, grid, bench, auto_path, args.batch, tmp))
        runs[other].append(sweep_once(lab, grid, bench, other, args.batch, tmp))
        runs["naive"].append(naive_once(naive_engine, grid, b, examples, args.batch, args.naive_mixtures, tmp))
    pipeline = naive_processes(lab_dir, grid, bench, args.batch, args.process_mixtures, tmp) * len(grid)

    def ratio(x: str, y: str) -> float:  # median of the paired ratios of one repeat each
        return statistics.median(t / u for t, u in zip(runs[x], runs[y]))

    floor, engine = statistics.median(runs["floor"]), statistics.median(runs[auto_path])
    per_mixture = statistics.median(runs["materialize"])
    naive = statistics.median(runs["naive"])
    return (
        f"{floor:>8.2f} {engine:>9.2f} {auto_path:<12} {ratio(auto_path, 'floor'):>7.2f} {per_mixture:>14.2f} "
        f"{ratio('materialize', 'batched'):>10.2f} {naive:>8.1f} {ratio('naive', auto_path):>8.1f} {pipeline:>11.0f} "
        f"{pipeline / engine:>11.0f}"
    )


if __name__ == "__main__":
    main()
