from pathlib import Path

from omegaconf import OmegaConf

from tracenet.config import compose, load_params

ROOT = Path(__file__).resolve().parents[1]


def test_committed_params_yaml_is_the_composed_conf():
    """DVC composes params.yaml only on `dvc exp run`; `dvc repro` reads the committed one."""
    committed = OmegaConf.to_container(load_params(ROOT / "params.yaml"))
    composed = OmegaConf.to_container(compose(), resolve=True)
    assert committed == composed, "params.yaml is stale: `python -m tracenet.config > params.yaml`"


def test_missing_params_file_says_how_to_fix(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="regenerate it"):
        load_params(tmp_path / "params.yaml")
