"""`tracenet` command line: thin fronts over the library and the pipeline stages.

Each subcommand registers itself in SUBCOMMANDS with a function that adds its arguments and
a function that runs it; heavy imports happen inside the run functions so `--help` is fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from tracenet import __version__


class UserError(Exception):
    """A problem the user can fix; printed as one clear line, without a traceback."""


@dataclass(frozen=True)
class Subcommand:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _lazy(module: str, name: str) -> Callable:
    """``module.name`` called on first use: the command's imports stay out of `tracenet --help`."""

    def call(arg):
        from importlib import import_module

        return getattr(import_module(module), name)(arg)

    return call


def _command(help: str, module: str, add_arguments: str = "add_arguments", run: str = "run") -> Subcommand:
    """A subcommand implemented in ``module`` (tracenet.commands.*), imported only when used."""
    return Subcommand(help=help, add_arguments=_lazy(module, add_arguments), run=_lazy(module, run))


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="rerun every stage (dvc repro --force)")


def _run_demo(args: argparse.Namespace) -> int:
    from tracenet.demo import run_demo

    return run_demo(force=args.force)


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument(
        "--checkpoint",
        help="model checkpoint (default: outputs/train/model.pt; without it, an untrained model of the default "
        "config, with a warning)",
    )
    parser.add_argument(
        "--max-sessions",
        type=int,
        default=4,
        help="images kept with their region caches (a few MB each for the default model, ~0.7 GB for R-18 800x1333)",
    )
    parser.add_argument("--max-upload-mib", type=float, default=10.0, help="largest upload accepted, in MiB")
    parser.add_argument("--max-side", type=int, default=4096, help="largest image side accepted, in pixels")
    parser.add_argument(
        "--prepare",
        action="store_true",
        help="on opening an image, precompute what every tap needs (the backbone) so taps answer fast",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: 1 on a machine with at most 2 cores, else torch's)",
    )


def _run_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError("the demo needs the serve extra: pip install 'tracenet[serve]'") from None
    from tracenet.serve.limits import Limits
    from tracenet.serve.server import run_server

    try:
        limits = Limits(max_bytes=int(args.max_upload_mib * 2**20), max_side=args.max_side)
        return run_server(
            args.host, args.port, args.checkpoint, limits, args.max_sessions, args.prepare, args.threads
        )
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from None


SUBCOMMANDS: dict[str, Subcommand] = {
    "segment": _command(
        "segment the object under one tap: writes the mask, prints score, level, MACs, time",
        "tracenet.commands.segment",
    ),
    "demo": Subcommand(
        help="run the main job (the DVC pipeline) on the embedded synthetic default",
        add_arguments=_demo_arguments,
        run=_run_demo,
    ),
    "serve": Subcommand(
        help="interactive browser demo: tap an object, see its mask and what trace mode saved",
        add_arguments=_serve_arguments,
        run=_run_serve,
    ),
    "export": _command(
        "the export stage: FullNet/TraceNet ONNX and TFLite artifacts with metadata, verified",
        "tracenet.commands.export",
        "export_arguments",
        "run_export",
    ),
    "profile": _command(
        "the profile stage: cold start, latency, RSS, size and MACs of every exported artifact",
        "tracenet.commands.export",
        "profile_arguments",
        "run_profile",
    ),
    "bench": _command(
        "run a benchmark: model (TraceNet vs FullNet per tap), rft (plan vs full), serve (tap latency)",
        "tracenet.commands.bench",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracenet",
        description="TraceNet: one tap, one instance mask; computes only the tap's receptive field.",
    )
    parser.add_argument("--version", action="version", version=f"tracenet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in SUBCOMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.help, description=command.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return SUBCOMMANDS[args.command].run(args)
    except UserError as err:
        print(f"tracenet {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
