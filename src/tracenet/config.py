"""Configuration: compose conf/ with Hydra, or read the params.yaml the DVC stages use.

conf/ is the single source of truth. params.yaml is its composition with no overrides
(DVC rewrites it on `dvc exp run -S ...`); stage scripts read params.yaml so that DVC's
overrides reach them, and a test keeps the committed params.yaml equal to compose().
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose conf/ the way the Hydra apps do (without changing the working directory)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))


def load_params(path: str | Path = "params.yaml") -> DictConfig:
    """The stage parameters DVC tracks; a clear error when the file is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run stages from the project root, or regenerate it with "
            "`python -m tracenet.config > params.yaml`"
        )
    return OmegaConf.load(path)


def main() -> None:
    """Print compose() as YAML (used to regenerate params.yaml)."""
    import sys

    print(OmegaConf.to_yaml(compose(sys.argv[1:]), resolve=True), end="")


if __name__ == "__main__":
    main()
