"""``python -m mixlab``: inspect labs, merge, evaluate and sweep from the shell. Thin over the library:
it parses, validates, calls, prints. Errors are one line on stderr and exit code 2.

One module per command group, each adding its commands to the parser (``add_commands``); the options
they share are declared once in :mod:`mixlab.cli.common`."""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from mixlab.cli import info, jobs, lab, merge, report, search
from mixlab.cli.common import OPEN, attach_values
from mixlab.cli.lab import demo_budget
from mixlab.errors import MixlabError

__all__ = ["console", "demo_budget", "main", "parser"]

GROUPS = (info, merge, search, jobs, report, lab)  # the order `python -m mixlab --help` lists them in


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mixlab", description="Choose data mixtures by merging experts.")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(sub)
    return p


def console() -> None:
    """The ``mixlab`` console script (``pip install -e .``)."""
    sys.exit(main())


def main(argv: list[str] | None = None) -> int:
    OPEN.clear()
    try:
        # inside the try: --method and --sampler are checked against the registries while parsing
        args = parser().parse_args(attach_values(sys.argv[1:] if argv is None else list(argv)))
        args.fn(args)
    except MixlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug in mixlab: still one line, with the way to see more
        if os.environ.get("MIXLAB_DEBUG"):
            traceback.print_exc()
        print(
            f"error: unexpected {type(e).__name__}: {e} (a mixlab bug; MIXLAB_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 2
    finally:
        for engine in OPEN:
            for w in engine.warnings():
                print(f"warning: {w}", file=sys.stderr)
    return 0
