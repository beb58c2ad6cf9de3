"""DVC stage `download`: fetch the configured dataset (a no-op, said so, for the synthetic one)."""

from __future__ import annotations

import sys

from tracenet.config import load_params
from tracenet.data.download import DownloadError, download_dataset


def main() -> int:
    params = load_params()
    data = params.data
    manifest = f"{params.paths.data_root}/downloads/{data.name}.json"
    try:
        download_dataset(list(data.download), data.root, manifest=manifest)
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
