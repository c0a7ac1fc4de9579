"""``mixlab merge`` / ``eval`` / ``sweep``: one mixture written out as a model (or adapter, or mergekit
config), one mixture's proxy scores, and the proxy scores over a grid of mixtures."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from mixlab.cli.common import (
    Bar,
    device_options,
    executor,
    executor_options,
    failed,
    lab_command,
    merge_options,
    method_params,
    open_engine,
    positive,
    print_evals,
)
from mixlab.errors import MixlabError

MAX_MIXTURES = 10_000  # a sweep larger than this asks for --max-mixtures (or --yes) first


def add_commands(sub) -> None:
    s = lab_command(sub, "merge", "Merge the experts with mixture weights and write the model.", cmd_merge)
    merge_options(s)
    s.add_argument("--out", default=None, help="output folder (Hugging Face model, or PEFT adapter with --adapter)")
    s.add_argument(
        "--mergekit-yaml", default=None, metavar="FILE", help="also (or only) write the mergekit config of this merge"
    )
    s.add_argument("--adapter", action="store_true", help="write a rank-concatenated PEFT adapter (linear LoRA merges)")
    s.add_argument(
        "--overwrite", action="store_true", help="replace --out if it is an earlier mixlab export (never other folders)"
    )
    for name, text, fn in (
        ("eval", "Proxy scores of one mixture (cached first).", cmd_eval),
        ("sweep", "Proxy scores over a grid of mixtures; fills the cache.", cmd_sweep),
    ):
        s = lab_command(sub, name, text, fn)
        merge_options(s, weights=name == "eval")
        s.add_argument("--benchmark", action="append", default=None, help="benchmark name, repeatable (default: all)")
        device_options(s)
        s.add_argument("--json", action="store_true", help="print scores as JSON")
        executor_options(s)
        if name == "eval":
            s.add_argument("--refresh", action="store_true", help="re-evaluate even if cached")
        else:
            s.add_argument(
                "--grid",
                default="0.1",
                help="step like 0.1, 'paper' (the seed paper's presets), 'true' (the lab's true-mixture points) "
                "or dirichlet:N",
            )
            s.add_argument("--seed", type=int, default=0, help="seed for Dirichlet draws")
            s.add_argument(
                "--checkpoints",
                action="store_true",
                help="score the lab's checkpoints instead of merges: the base, every expert, every true mixture",
            )
            s.add_argument(
                "--max-mixtures",
                type=positive,
                default=MAX_MIXTURES,
                help=f"refuse grids larger than this (default {MAX_MIXTURES:,})",
            )
            s.add_argument("--yes", action="store_true", help="run a grid of any size")


def cmd_merge(args) -> None:
    from mixlab.simplex import parse_weights

    engine = open_engine(args)
    mixture = parse_weights(args.weights, engine.names, normalize=args.normalize)
    if not args.out and not args.mergekit_yaml:
        raise MixlabError("merge needs --out (a model or adapter folder) and/or --mergekit-yaml (a mergekit config)")
    if args.mergekit_yaml:
        from mixlab.interop.mergekit import save_mergekit, to_mergekit

        text, notes = to_mergekit(engine, mixture, args.method, method_params(args.param))
        save_mergekit(Path(args.mergekit_yaml), text)
        print(f"wrote mergekit config {args.mergekit_yaml} (run: mergekit-yaml {args.mergekit_yaml} OUT_DIR)")
        for n in notes:
            print(f"  note: {n}", file=sys.stderr)
        if not args.out:
            return
    with Bar("merging", "tensor") as bar:
        out = engine.export(
            mixture,
            Path(args.out),
            args.method,
            method_params(args.param),
            adapter=args.adapter,
            overwrite=args.overwrite,
            progress=bar,
        )
    print(f"wrote {'PEFT adapter' if args.adapter else 'model'} {out} ({mixture.label()})")


def cmd_eval(args) -> None:
    from mixlab.scoring import proxy
    from mixlab.simplex import parse_weights

    engine = open_engine(args)
    mixture = parse_weights(args.weights, engine.names, normalize=args.normalize)
    request = engine.request([mixture], args.method, method_params(args.param), args.benchmark, path="materialize")
    if args.backend == "ray":
        if args.refresh:
            raise MixlabError("--refresh is for --backend local (a Ray worker scores what is not cached)")
        result = executor(args).run(engine, request)
        failed(result)
        evals = result.evaluations
    else:
        with Bar("evaluating") as bar:
            evals = proxy.score(engine, request, refresh=args.refresh, progress=bar)
    print_evals(evals, args.json)


def _grid(engine, grid: str, seed: int, max_mixtures: int) -> list:
    """The mixtures ``--grid`` names, refused (with their count) when more than ``max_mixtures``."""
    from mixlab.simplex import dirichlet, grid_from_step, grid_size, paper_grid

    k = len(engine.names)
    bad = f"--grid must be a step like 0.1, 'paper', 'true' or 'dirichlet:N', got {grid!r}"
    if grid == "paper":
        return list(paper_grid(k, seed))
    if grid == "true":
        points = [engine.lab.true_mixture_weights(t).weights for t in engine.lab.manifest.true_mixtures]
        if not points:
            raise MixlabError(f"lab {engine.lab.name!r} has no true mixtures for --grid true")
        return points
    if grid.startswith("dirichlet:"):
        n = grid.split(":", 1)[1]
        if not n.isdigit() or int(n) < 1:
            raise MixlabError(f"--grid dirichlet:N needs a positive whole number N, got {n!r}")
        count = int(n)
    else:
        try:
            step = float(grid)
        except ValueError:
            raise MixlabError(bad) from None
        if not math.isfinite(step) or not 0 < step <= 1:
            raise MixlabError(f"--grid step must be in (0, 1], like 0.1 or 0.25, got {grid!r}")
        count = grid_size(k, step)
    if count > max_mixtures:
        raise MixlabError(
            f"--grid {grid} makes {count:,} mixtures for K={k} experts, more than {max_mixtures:,}; "
            f"pass --max-mixtures {count} (or --yes) to run it anyway, or choose a coarser grid"
        )
    return list(dirichlet(k, count, 1.0, seed)) if grid.startswith("dirichlet:") else list(grid_from_step(k, step))


def cmd_sweep(args) -> None:
    from mixlab.scoring import checkpoints
    from mixlab.simplex import Mixture

    engine = open_engine(args)
    if args.checkpoints and args.backend != "local":
        raise MixlabError("--checkpoints runs here (a handful of models): drop --backend ray for it")
    if args.checkpoints:
        with Bar("scoring the base, experts and true mixtures") as bar:
            evals = checkpoints.checkpoint_scores(engine, args.benchmark, progress=bar)
        if args.json:
            print_evals(evals, True)
        else:
            kinds = {k: len({e.label for e in evals if e.kind == k}) for k in ("base", "expert", "true")}
            print(
                f"{len(evals)} scores: the base, {kinds['expert']} experts and {kinds['true']} true mixtures "
                f"in {engine.store.path}"
            )
        return
    points = _grid(engine, args.grid, args.seed, math.inf if args.yes else args.max_mixtures)
    mixtures = [Mixture.of(engine.names, p, normalize=True) for p in points]
    runner = executor(args)
    with Bar(f"sweeping {len(mixtures)} mixtures on the {runner.name} backend", runner.progress_unit) as bar:
        request = engine.request(mixtures, args.method, method_params(args.param), args.benchmark)
        result = runner.run(engine, request, progress=bar)
    if args.json:
        print_evals(result.evaluations, True)
    else:
        print(f"{len(result.evaluations)} scores for {len(mixtures)} mixtures in {engine.store.path}")
    failed(result)
