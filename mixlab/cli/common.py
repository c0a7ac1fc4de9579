"""What every command group shares: the options declared once (the lab argument, the merge method and
its parameters, the device, the executor), the engine a command opens, the progress bar, the one-line
error on a failed sweep. Option choices come from the library's registries (merge methods, samplers), so
a method registered there is a choice here with no edit; they are read when a help text shows them or a
value is checked, so ``--help`` and a usage error do not import torch or optuna."""

from __future__ import annotations

import argparse
import json
import sys

from mixlab.demo import DEMO_LAB
from mixlab.errors import MixlabError

VALUE_OPTIONS = ("--weights",)  # options whose value may start with '-' (a negative weight, said as such)


def method_params(pairs: list[str]) -> dict[str, str]:
    """``--param NAME=VALUE`` (repeated) as a dict; the method validates the values."""
    out = {}
    for p in pairs or []:
        name, eq, value = p.partition("=")
        if not eq or not name:
            raise MixlabError(f"--param expects NAME=VALUE, got {p!r}")
        out[name.strip()] = value.strip()
    return out


def attach_values(argv: list[str]) -> list[str]:
    """``--weights -0.2,0.6,0.6`` as ``--weights=-0.2,0.6,0.6``: argparse takes a value that starts with '-'
    (and is not one plain negative number) for an option, and would say "expected one argument" instead of
    what is wrong with the weights."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if (
            argv[i] in VALUE_OPTIONS
            and i + 1 < len(argv)
            and argv[i + 1].startswith("-")
            and not argv[i + 1].startswith("--")
        ):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


class Names:
    """A registry's names, read when first shown: an option's help says ``%(names)s``."""

    def __init__(self, load):
        self.load = load

    def __str__(self) -> str:
        return ", ".join(self.load())


def method_names() -> list[str]:
    from mixlab.merge.methods import methods

    return [m.name for m in methods()]


def sampler_names() -> list[str]:
    from mixlab.search import SAMPLERS

    return list(SAMPLERS)


def merge_method(name: str) -> str:
    """``--method``: a name in the merge-method registry, refused with the registry's own message (a
    MixlabError, one line like every other input error) before any lab is loaded."""
    from mixlab.merge.methods import get_method

    return get_method(name).name


def sampler(name: str) -> str:
    """``--sampler``: one of mixlab.search.SAMPLERS, refused with the library's message otherwise."""
    names = sampler_names()
    if name not in names:
        raise MixlabError(f"sampler must be one of {', '.join(names)}, got {name!r}")
    return name


def space_names() -> list[str]:
    from mixlab.search import SPACES

    return list(SPACES)


def space(name: str) -> str:
    """``--space``: one of mixlab.search.SPACES, refused with the library's message otherwise."""
    from mixlab.search import box_bounds

    box_bounds(name)
    return name


def space_option(s) -> None:
    """--space, its choices from mixlab.search.SPACES."""
    action = s.add_argument(
        "--space",
        type=space,
        default="simplex",
        metavar="SPACE",
        help="%(names)s (default simplex): simplex draws weights Dirichlet-uniform, never exactly 0; sparse lets a "
        "weight be exactly 0 (a region of the sampler's box), so a search can settle on a few experts",
    )
    action.names = Names(space_names)


def sampler_option(s, default: str, note: str = "") -> None:
    """--sampler, its choices from mixlab.search.SAMPLERS."""
    action = s.add_argument(
        "--sampler", type=sampler, default=default, metavar="SAMPLER", help=f"%(names)s (default {default}{note})"
    )
    action.names = Names(sampler_names)


def lab_command(sub, name: str, help_text: str, fn):
    """A command that works on one lab (the positional LAB, default the demo lab)."""
    s = sub.add_parser(name, help=help_text, description=help_text)
    s.add_argument("lab", nargs="?", default=str(DEMO_LAB), help="lab folder or lab.toml (default: the demo lab)")
    s.set_defaults(fn=fn)
    return s


def merge_options(s, weights: bool = True) -> None:
    """--weights/--normalize (when the command takes one mixture), --method and --param."""
    if weights:
        s.add_argument("--weights", required=True, help="0.2,0.3,0.5 (expert order) or name=0.2,other=0.8")
        s.add_argument("--normalize", action="store_true", help="rescale weights to sum to 1")
    action = s.add_argument(
        "--method", type=merge_method, default=None, metavar="METHOD", help="%(names)s (default: the lab's)"
    )
    action.names = Names(method_names)
    s.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="method parameter, repeatable")


def device_options(s) -> None:
    """Where a command's evaluations run here: --device and --batch-size."""
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps (default: best available)")
    s.add_argument(
        "--batch-size", type=positive, default=None, help="rows per forward pass (default: from free memory)"
    )


def executor_options(s) -> None:
    """Where a command's evaluations run: here, or on Ray workers."""
    s.add_argument("--backend", choices=("local", "ray"), default="local", help="where evaluations run (default local)")
    s.add_argument(
        "--address",
        default=None,
        help="--backend ray: 'auto' (a running cluster), ray://host:10001, or none to start one here",
    )
    s.add_argument(
        "--workers", type=positive, default=None, help="--backend ray: actors (default: one per GPU, else CPU)"
    )


OPEN: list = []  # engines this command opened, whose warnings are printed at the end


def open_engine(args):
    """The lab session for ``args.lab`` with this command's device and batch size (when it has them)."""
    from mixlab.engine import Engine
    from mixlab.lab import load_lab

    engine = Engine(
        load_lab(args.lab), device=getattr(args, "device", None), batch_size=getattr(args, "batch_size", None)
    )
    OPEN.append(engine)
    return engine


class Bar:
    """A tqdm bar drawn on the first progress report (so input errors print alone), closed on exit."""

    def __init__(self, desc: str, unit: str = "eval"):
        self.desc, self.unit, self.bar = desc, unit, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()

    def __call__(self, done: int, total: int, message: str = "") -> None:
        from tqdm.auto import tqdm

        if self.bar is None:
            self.bar = tqdm(desc=self.desc, unit=self.unit, total=total, file=sys.stderr)
        self.bar.set_postfix_str(message[-60:], refresh=False)
        self.bar.update(done - self.bar.n)


def executor(args):
    """The executor ``--backend`` names, with this command's device and batch size for its workers."""
    from mixlab.run.executors import backend

    return backend(
        args.backend,
        args.address,
        args.workers,
        **({"device": args.device, "batch_size": args.batch_size} if args.backend == "ray" else {}),
    )


def failed(result) -> None:
    """Exit 1 after printing which mixtures failed (their reasons), the rest having been stored."""
    if result.failed:
        print(
            f"error: {result.summary()}; the other scores are cached (run the command again to retry)", file=sys.stderr
        )
        raise SystemExit(1)


def print_evals(evals, as_json: bool) -> None:
    """Scores one per line (benchmark, metric and its direction, score, n), or as JSON records."""
    if as_json:
        fields = ("kind", "label", "benchmark", "metric", "score", "higher_is_better", "n", "weights", "method")
        print(json.dumps([{f: getattr(e, f) for f in fields} | {"params": e.params} for e in evals], indent=2))
        return
    for e in evals:
        arrow = "↑" if e.higher_is_better else "↓"
        print(f"{e.benchmark:<16} {e.metric:<9}{arrow} {e.score:.4f}  (n={e.n})")
