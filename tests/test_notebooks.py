"""The notebooks execute end to end (nbclient), so they never rot.

They run on a tiny project (random-weight checkpoint, 2-image split, its evaluate outputs):
the same code paths as on the pipeline's outputs, at a size CI can afford.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from test_evaluate_pipeline import _stage, project  # noqa: F401 - the tiny project fixture

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(scope="module")
def evaluated(project):  # noqa: F811 - pytest fixture injection
    import os

    cwd = Path.cwd()
    os.chdir(project)
    try:
        assert _stage("evaluate")() == 0
    finally:
        os.chdir(cwd)
    return project


def _execute(name: str, env: dict[str, str], monkeypatch) -> nbformat.NotebookNode:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return nb


def _text(nb: nbformat.NotebookNode) -> str:
    return "\n".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )


def _pngs(nb: nbformat.NotebookNode) -> list:
    return [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]


@pytest.mark.slow
def test_demo_notebook_runs_and_shows_trace_vs_full(evaluated, monkeypatch):
    env = {
        "TRACENET_CHECKPOINT": str(evaluated / "model.pt"),
        "TRACENET_IMAGE": str(evaluated / "images" / "1.png"),
        "TRACENET_CLICK": "20,15",
    }
    nb = _execute("demo.ipynb", env, monkeypatch)
    out = _text(nb)
    assert "trace / full MACs" in out and "second tap in the session" in out
    assert len(_pngs(nb)) == 2, "expected the mask figure and the regions figure"


@pytest.mark.slow
def test_evaluation_notebook_plots_the_evaluate_outputs(evaluated, monkeypatch):
    nb = _execute("evaluation.ipynb", {"TRACENET_EVAL_DIR": str(evaluated / "out" / "eval")}, monkeypatch)
    assert len(_pngs(nb)) >= 2, "expected the per-band and per-category figures"
    assert "ablate" in _text(nb)  # no ablation folder here: the notebook says how to make it


def test_missing_checkpoint_fails_with_what_to_run(monkeypatch, tmp_path):
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError, match="make demo"):
        _execute("demo.ipynb", {"TRACENET_CHECKPOINT": str(tmp_path / "none.pt")}, monkeypatch)
