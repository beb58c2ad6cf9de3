"""`tracenet bench model|rft|serve [ARGS]`: the project's benchmarks, run by their own mains.

Each target is a module with an argparse ``main(argv)``; ARGS go to it unchanged, so its
options are defined (and documented by ``--help``) in one place only.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tracenet.cli import UserError

# target -> (module with main(argv), what it measures, the extra it needs beyond the core install)
TARGETS: dict[str, tuple[str, str, str | None]] = {
    "model": (
        "tracenet.models.benchmark",
        "TraceNet vs FullNet per tap at 800x1333 on coco_mini: MACs, time, 2nd tap",
        None,
    ),
    "rft": (
        "tracenet.rft.benchmark",
        "RFT plan.run vs the full forward of resnet50 layer3: MACs and time ratios",
        None,
    ),
    "serve": (
        "tracenet.serve.bench",
        "tap latency of `tracenet serve` through its app on an 800x1333 photo",
        "serve",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    targets = "\n".join(
        f"  {name:<6} {desc}\n         (python -m {mod})" for name, (mod, desc, _) in TARGETS.items()
    )
    parser.epilog = f"targets:\n{targets}\n\n`tracenet bench TARGET --help` lists the target's own options."
    parser.add_argument("target", choices=TARGETS, help="which benchmark to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="the benchmark's own options")


@contextmanager
def _prog(name: str) -> Iterator[None]:
    """argparse names a parser after sys.argv[0]: make the target's usage read `tracenet bench X`."""
    saved = sys.argv[0]
    sys.argv[0] = name
    try:
        yield
    finally:
        sys.argv[0] = saved


def run(args: argparse.Namespace) -> int:
    module, _, extra = TARGETS[args.target]
    try:
        with _prog(f"tracenet bench {args.target}"):
            code = importlib.import_module(module).main(args.args)
    except ImportError as err:
        hint = f"pip install -e '.[{extra}]'" if extra else "reinstall: pip install -e ."
        raise UserError(f"{err} ({hint})") from None
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from None
    return int(code or 0)
