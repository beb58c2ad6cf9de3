"""Where the pipeline's trained model lives, and loading it with a clear message when absent."""

from __future__ import annotations

from pathlib import Path

# Written by the DVC train stage; the CLI, the notebooks and `tracenet serve` default to it.
DEFAULT_CHECKPOINT = Path("outputs/train/model.pt")


def resolve_checkpoint(path: str | Path | None) -> Path:
    """The checkpoint to load: ``path`` if given, else the pipeline's default; must exist."""
    from tracenet.cli import UserError

    chosen = Path(path) if path is not None else DEFAULT_CHECKPOINT
    if chosen.is_file():
        return chosen
    if path is not None:
        raise UserError(f"checkpoint {chosen} does not exist")
    raise UserError(
        f"no trained model at {DEFAULT_CHECKPOINT}: run `make demo` (or `dvc repro train`) "
        "to train the default model, or pass --checkpoint PATH"
    )


def load_model(path: str | Path | None):
    """TraceNet in eval mode from ``path`` or the default checkpoint (see resolve_checkpoint)."""
    from tracenet import TraceNet
    from tracenet.cli import UserError

    chosen = resolve_checkpoint(path)
    try:
        return TraceNet.from_checkpoint(chosen)
    except (ValueError, FileNotFoundError) as err:
        raise UserError(str(err)) from err
