"""`tracenet export` and `tracenet profile`: the DVC stages `export` and `profile` on demand.

Both read the ``export:`` block of the Hydra config (conf/ composed: the values params.yaml
holds), apply Hydra overrides given as KEY=VALUE (as `python -m tracenet.train` takes them),
then the flags, which are shorthands for keys of that block and win over both; then they
call the stages' own functions (tracenet.export.stage.run_export / run_profile).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tracenet.cli import UserError

OVERRIDES = "Hydra overrides of the config (applied before the flags), e.g. "


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


def _names(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return names


def _threads(text: str) -> list[int]:
    return [_count(1)(v) for v in _names(text)]


def export_arguments(parser: argparse.ArgumentParser) -> None:
    example = "export.verify.max_images=1 paths.out_root=/tmp/out"
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES + example)
    parser.add_argument(
        "--checkpoint", help="model.pt to export (export.checkpoint; default: the train stage's model)"
    )
    parser.add_argument(
        "--backbone",
        type=_names,
        metavar="NAME[,NAME]",
        help="export these backbones with random weights instead of a checkpoint (export.backbones)",
    )
    parser.add_argument(
        "--input-size",
        type=_count(1),
        metavar="S",
        help="square input side, a multiple of 128 (export.input_size)",
    )
    parser.add_argument(
        "--formats", type=_names, metavar="F[,F]", help="onnx, tflite, tflite_int8 (export.formats)"
    )
    parser.add_argument("--out", metavar="DIR", help="artifact folder (export.out_dir)")


def profile_arguments(parser: argparse.ArgumentParser) -> None:
    example = "paths.out_root=/tmp/out"
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES + example)
    parser.add_argument(
        "--artifacts", metavar="DIR", help="folder of .onnx/.tflite artifacts (export.out_dir)"
    )
    parser.add_argument("--out", metavar="DIR", help="where profile.json/.md go (export.profile.out_dir)")
    parser.add_argument(
        "--threads", type=_threads, metavar="N[,N]", help="thread counts (export.profile.threads)"
    )
    parser.add_argument(
        "--runs", type=_count(1), metavar="N", help="timed calls per artifact (export.profile.runs)"
    )
    parser.add_argument(
        "--warmup", type=_count(0), metavar="N", help="untimed calls first (export.profile.warmup)"
    )


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def export_config(overrides: list[str], flags: dict[str, object]):
    """The ``export`` block: conf/ composed with ``overrides``, then ``flags`` (dotted key -> value,
    None = not given) set on top."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from tracenet.config import compose

    try:
        cfg = compose(overrides)
        for key, value in flags.items():
            if value is not None:
                OmegaConf.update(cfg, key, value)
        OmegaConf.to_container(cfg.export, resolve=True)  # bad interpolations fail here, not midway
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(_one_line(err)) from None
    return cfg.export


def _check(p) -> None:
    """Bad input named before anything is loaded or built: size, formats, checkpoint, backbones."""
    from tracenet.checkpoints import DEFAULT_CHECKPOINT, resolve_checkpoint
    from tracenet.export.build import check_formats
    from tracenet.models.config import BACKBONES, STRIDES

    stride = max(STRIDES.values())  # P7: every level's grid must tile the static input
    if not isinstance(p.input_size, int) or p.input_size < stride or p.input_size % stride:
        raise UserError(
            f"input size must be a positive multiple of {stride} (the P7 stride), got {p.input_size}"
        )
    try:
        check_formats(p.formats)
    except ValueError as err:
        raise UserError(str(err)) from None
    if p.checkpoint:
        try:
            resolve_checkpoint(None if Path(p.checkpoint) == DEFAULT_CHECKPOINT else p.checkpoint)
        except UserError as err:
            raise UserError(f"{err}, or export random weights with --backbone NAME") from None
        return
    unknown = [b for b in p.backbones or [] if b not in BACKBONES]
    if unknown:
        raise UserError(f"unknown backbone {', '.join(unknown)}; choose from {', '.join(BACKBONES)}")


def run_export(args: argparse.Namespace) -> int:
    import json
    import logging

    if args.backbone and args.checkpoint:
        raise UserError("give --checkpoint (trained weights) or --backbone (random weights), not both")
    flags = {
        "export.checkpoint": args.checkpoint,
        "export.backbones": args.backbone,
        "export.input_size": args.input_size,
        "export.formats": args.formats,
        "export.out_dir": args.out,
    }
    p = export_config(args.overrides, flags)
    if args.backbone:
        p.checkpoint = None
    _check(p)
    logging.basicConfig(format="%(levelname)s %(message)s")  # the converters' INFO chatter stays quiet
    logging.getLogger("tracenet").setLevel(logging.INFO)
    from tracenet.export.errors import ExportError
    from tracenet.export.stage import run_export as export_stage

    try:
        summary = export_stage(p)
    except (FileNotFoundError, ValueError, ImportError, ExportError) as err:
        raise UserError(str(err)) from None
    print(json.dumps(summary, indent=2))
    print(f"artifacts, their .json and verify.json in {p.out_dir}")
    return 0


def run_profile(args: argparse.Namespace) -> int:
    flags = {
        "export.out_dir": args.artifacts,
        "export.profile.out_dir": args.out,
        "export.profile.threads": args.threads,
        "export.profile.runs": args.runs,
        "export.profile.warmup": args.warmup,
    }
    p = export_config(args.overrides, flags)
    from tracenet.export.profile import artifacts_in
    from tracenet.export.stage import run_profile as profile_stage

    try:
        artifacts_in(p.out_dir)
    except FileNotFoundError:
        raise UserError(
            f"no .onnx/.tflite artifacts in {p.out_dir}: create them with `tracenet export` "
            "(or `dvc repro export`), or pass --artifacts DIR"
        ) from None
    try:
        js, md = profile_stage(p)
    except (RuntimeError, ValueError) as err:
        raise UserError(str(err)) from None
    print(md.read_text(), end="")
    print(f"wrote {js} and {md}")
    return 0
