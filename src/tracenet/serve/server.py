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
    max_sessions: int = 8,
) -> int:
    """Serve until interrupted; says which model it serves, loudly when it is untrained."""
    import uvicorn

    from tracenet.serve.app import create_app
    from tracenet.serve.engine import load_engine

    if not 0 < port < 65536:
        raise ValueError(f"port must be in 1..65535, got {port}")
    engine = load_engine(checkpoint)
    print(f"tracenet serve: model {engine.info.backbone} from {engine.info.source}", file=sys.stderr)
    if engine.info.warning:
        print(f"tracenet serve: WARNING: {engine.info.warning}", file=sys.stderr)
    loopback = is_loopback(host)
    if not loopback:
        print(
            f"tracenet serve: WARNING: listening on {host}: anyone who can reach this machine can use the demo",
            file=sys.stderr,
        )
    app = create_app(
        engine, limits, max_sessions, allowed_hosts=LOOPBACK_NAMES if host in LOOPBACK_NAMES else None
    )
    shown = f"[{host}]" if ":" in host else host
    print(f"tracenet serve: open http://{shown}:{port}/ (Ctrl+C to stop)", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
