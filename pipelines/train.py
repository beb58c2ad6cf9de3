"""DVC stage `train`: train TraceNet with params.yaml into ``<paths.out_root>/train``.

Writes ``model.pt`` (the evaluate stage's checkpoint), ``summary.json`` (metrics), the
Lightning checkpoints under ``checkpoints/`` and the loggers' files. ``ckpt_path=last`` in
params.yaml (``dvc exp run -S ckpt_path=last``) resumes an interrupted stage.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> int:
    from tracenet.config import load_params
    from tracenet.lit import NonFiniteLossError
    from tracenet.train import train

    try:
        params = load_params()
        train(params, Path(params.paths.out_root) / "train")
    except (FileNotFoundError, ValueError, NonFiniteLossError) as err:
        print(f"train: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
