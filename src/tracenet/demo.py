"""The main job of the quickstart: `dvc repro` of the pipeline on the embedded default."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def project_root() -> Path:
    """The checkout holding dvc.yaml (the demo runs the pipeline of this checkout)."""
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "dvc.yaml").is_file():
            return candidate
    from tracenet.cli import UserError

    raise UserError("no dvc.yaml found here or above; run `make demo` from the TraceNet checkout")


def run_demo(force: bool = False) -> int:
    root = project_root()
    # Stage commands run `python`: put this interpreter's folder (the venv) first on PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1", "WANDB_ERROR_REPORTING": "false"}
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or "dvc"
    if not (root / ".dvc").is_dir():
        subprocess.run([dvc, "init", "--quiet"], cwd=root, env=env, check=True)
    cmd = [dvc, "repro", *(["--force"] if force else [])]
    return subprocess.run(cmd, cwd=root, env=env).returncode
