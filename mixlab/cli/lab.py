"""``mixlab lab init`` / ``lab from-mergekit`` / ``lab summaries`` / ``demo build``: make a lab, from a folder
of checkpoints and JSONL, from a mergekit config, or by training the built-in demo; ship its page summaries."""

from __future__ import annotations

from pathlib import Path

from mixlab.cli.common import positive
from mixlab.errors import MixlabError


def add_commands(sub) -> None:
    labs = sub.add_parser("lab", help="Make a lab: from a folder of checkpoints and JSONL, or from a mergekit config.")
    labs_sub = labs.add_subparsers(dest="lab_command", required=True)
    i = labs_sub.add_parser(
        "init",
        help="Write DIR/lab.toml from what is in DIR: the base, PEFT adapters or full fine-tunes, JSONL benchmarks "
        "(evaluators guessed from their fields, stated in comments); then run `mixlab info DIR`.",
    )
    i.add_argument("dir", help="the lab folder")
    i.add_argument("--base", required=True, help="the base model folder (inside DIR)")
    i.add_argument(
        "--experts",
        action="append",
        default=None,
        help="glob of expert folders under DIR, repeatable (default: every PEFT adapter or full fine-tune under DIR)",
    )
    i.add_argument("--name", action="append", help="OLD=NEW: name the expert in folder OLD as NEW (repeatable)")
    i.add_argument("--true", default=None, help="glob of checkpoints trained on mixtures (true mixtures) under DIR")
    i.add_argument(
        "--weights-from",
        default=None,
        help="CSV or JSON with each --true checkpoint's weight per expert (CSV: checkpoint,expert1,expert2,…)",
    )
    i.add_argument("--benchmarks", default="data/*.jsonl", help="glob of JSONL files (default data/*.jsonl)")
    i.set_defaults(fn=cmd_lab_init)
    m = labs_sub.add_parser("from-mergekit", help="Write a lab.toml from a mergekit config's base and models.")
    m.add_argument("config", help="mergekit YAML")
    m.add_argument("--out", default=None, help="lab folder (default: the folder that holds every model)")
    m.add_argument("--name", default=None, help="lab name (default: the config's file name)")
    m.set_defaults(fn=cmd_lab_from_mergekit)
    sm = labs_sub.add_parser(
        "summaries",
        help="Write LAB/summaries.json: what the Lab and Experts pages show about the checkpoints, so a fresh "
        "cache (a new clone, another machine) draws the pages without loading them (every demo build does).",
    )
    sm.add_argument("lab", type=Path, help="the lab folder")
    sm.set_defaults(fn=cmd_lab_summaries)

    demo = sub.add_parser("demo", help="The built-in demo lab.")
    demo_sub = demo.add_subparsers(dest="demo_command", required=True)
    b = demo_sub.add_parser("build", help="Train and write the demo lab (minutes on CPU).")
    b.add_argument("--out", type=Path, default=None, help="output folder (default: cache/demo-k3 or cache/demo-k4)")
    b.add_argument("--domains", type=int, default=3, choices=(3, 4))
    b.add_argument("--quick", action="store_true", help="tiny budget, for tests (under a minute)")
    b.add_argument("--full", action="store_true", help="full fine-tune experts instead of LoRA")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--overwrite", action="store_true")
    b.add_argument(
        "--scratch",
        action="store_true",
        help="the earlier recipe: a 120-step base on the tasks alone, 250-step experts",
    )
    b.add_argument(
        "--base-steps",
        type=positive,
        default=None,
        help="at most this many steps of the base's pretraining (default 2000)",
    )
    b.add_argument(
        "--base-target",
        type=float,
        default=None,
        help="pretrain until every domain's dev exact match reaches this (default 0.2; 0: exactly --base-steps)",
    )
    b.add_argument(
        "--pretrain-share", type=float, default=None, help="share of general data in the base's training (default 0.5)"
    )
    b.add_argument(
        "--recycle",
        action="store_true",
        help="a recycling lab: a pool of 14 checkpoints trained from demo-k3's base (a generalist, its "
        "continuations and halfway checkpoints): cache/demo-recycle",
    )
    b.add_argument(
        "--trials",
        dest="recycle_trials",
        type=positive,
        default=None,
        help="--recycle: search trials per seed (default 10 × the pool's checkpoints)",
    )
    b.add_argument(
        "--multimodal",
        action="store_true",
        help="the vision-language lab (a tiny LLaVA-style model, general/ocr/count/chart): cache/demo-vl",
    )
    b.add_argument("--replay", type=float, default=None, help="share of general data in every expert and true run")
    b.add_argument("--expert-steps", type=positive, default=None, help="steps per expert and true run (default 60)")
    b.add_argument("--lr", type=float, default=None, help="learning rate of every expert and true run (default 3e-3)")
    b.add_argument("--n-eval", type=positive, default=None, help="held-out examples per benchmark (default 200)")
    b.add_argument(
        "--replicates",
        type=positive,
        default=1,
        help="seeds per true mixture (default 1; ≥ 2 lists them as paths = [...], for the noise ceiling)",
    )
    b.add_argument(
        "--replicate-subset",
        choices=("all", "interior+vertices"),
        default="all",
        help="which true mixtures get --replicates (default all; interior+vertices: every weight > 0, or one expert)",
    )
    b.set_defaults(fn=cmd_demo_build)
    r = demo_sub.add_parser(
        "replicates",
        help="Train more seeds of every true mixture of a built demo lab (its recipe and seed from build_info.json), "
        "list them as paths = [...] in lab.toml, and score them (existing scores kept).",
    )
    r.add_argument("lab", type=Path, help="a lab built by `demo build` (e.g. cache/demo-k3)")
    r.add_argument("--replicates", type=positive, default=2, help="seeds per true mixture in all (default 2)")
    r.add_argument(
        "--subset",
        choices=("all", "interior+vertices"),
        default="all",
        help="which true mixtures get replicates (default all; interior+vertices: every weight > 0, or one expert)",
    )
    r.set_defaults(fn=cmd_demo_replicates)


def cmd_lab_init(args) -> None:
    from mixlab.interop.lab_init import init_lab

    names = {}
    for pair in args.name or []:
        old, sep, new = pair.partition("=")
        if not sep or not old or not new:
            raise MixlabError(f"--name {pair!r}: give OLD=NEW (an expert folder's name = the expert's name)")
        names[old] = new
    path = init_lab(
        Path(args.dir),
        args.base,
        args.experts,
        args.benchmarks,
        names=names,
        true=args.true,
        weights_from=args.weights_from,
    )
    print(f"wrote {path}; check it with: python -m mixlab info {path.parent}")


def cmd_lab_from_mergekit(args) -> None:
    from mixlab.interop.mergekit import lab_from_mergekit

    path = lab_from_mergekit(Path(args.config), Path(args.out) if args.out else None, args.name)
    print(f"wrote {path}; add benchmarks, or run: python -m mixlab info {path.parent}")


def cmd_lab_summaries(args) -> None:
    from mixlab.summary import ship

    print(f"wrote {ship(args.lab)}")


def demo_budget(args):
    """The demo recipe from ``demo build``'s flags: --quick, --scratch or the default (FULL), then any overrides."""
    from dataclasses import replace

    from mixlab.demo.build import BUDGET_FLAGS, FULL, QUICK, SCRATCH

    budget = QUICK if args.quick else SCRATCH if args.scratch else FULL
    for field, flag in BUDGET_FLAGS.items():  # the one table of flags (build_command writes them back)
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            budget = replace(budget, **{field: value})
    return budget


def cmd_demo_build(args) -> None:
    from mixlab.demo.build import build_demo, build_recycle

    if args.recycle:
        out = build_recycle(out=args.out, trials=args.recycle_trials, overwrite=args.overwrite)
        print(f"built recycling lab {out}")
        return
    if args.multimodal:
        from mixlab.demo.vision import build_vl

        out = build_vl(
            args.out,
            quick=args.quick,
            seed=args.seed,
            overwrite=args.overwrite,
            budget=demo_budget(args),
            replicates=args.replicates,
        )
        print(f"built multimodal demo lab {out}")
        return

    out = build_demo(
        args.out,
        domains=args.domains,
        quick=args.quick,
        full=args.full,
        seed=args.seed,
        overwrite=args.overwrite,
        budget=demo_budget(args),
        replicates=args.replicates,
        replicate_subset=args.replicate_subset,
    )
    print(f"built demo lab {out}")


def cmd_demo_replicates(args) -> None:
    from mixlab.demo.build import add_replicates

    out = add_replicates(args.lab, args.replicates, subset=args.subset)
    print(f"added replicates to {out}: {args.replicates} seeds per true mixture ({args.subset})")
