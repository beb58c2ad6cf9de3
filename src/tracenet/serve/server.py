"""Starting the demo: load the model, build the app, run uvicorn on a loopback address."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tracenet.serve.limits import Limits

LOOPBACK_NAMES = ["127.0.0.1", "localhost"]  # Host headers a loopback server answers


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run_server(
    host: str = "127.0.0.1",
    port: int = 8000,
    checkpoint: str | Path | None = None,
    limits: Limits | None = None,
    max_sessions: int = 4,
    prepare: bool = False,
    threads: int | None = None,
) -> int:
    """Serve until interrupted; says which model it serves, loudly when it is untrained."""
    import torch
    import uvicorn

    from tracenet.serve.app import create_app
    from tracenet.serve.engine import default_threads, input_size, load_engine

    if not 0 < port < 65536:
        raise ValueError(f"port must be in 1..65535, got {port}")
    if threads is None:
        threads = default_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    engine = load_engine(checkpoint)
    print(
        f"tracenet serve: model {engine.info.backbone} from {engine.info.source}, photos resized to "
        f"{input_size(engine.model.cfg)}; torch threads {torch.get_num_threads()}",
        file=sys.stderr,
    )
    if engine.info.warning:
        print(f"tracenet serve: WARNING: {engine.info.warning}", file=sys.stderr)
    loopback = is_loopback(host)
    if not loopback:
        print(
            f"tracenet serve: WARNING: listening on {host}: anyone who can reach this machine can use the demo",
            file=sys.stderr,
        )
    allowed = LOOPBACK_NAMES if host in LOOPBACK_NAMES else None
    app = create_app(engine, limits, max_sessions, allowed_hosts=allowed, prepare=prepare)
    shown = f"[{host}]" if ":" in host else host
    print(f"tracenet serve: open http://{shown}:{port}/ (Ctrl+C to stop)", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
