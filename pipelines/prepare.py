"""DVC stage `prepare`: generate the synthetic dataset, or check a downloaded one."""

from __future__ import annotations

import sys

from omegaconf import OmegaConf

from tracenet.config import load_params
from tracenet.data.prepare import prepare


def main() -> int:
    data = OmegaConf.to_container(load_params().data, resolve=True)
    try:
        prepare(data)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
