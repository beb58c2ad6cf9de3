"""The optional Optuna sweep (conf/hparams_search/, the sweep extra): it composes, its search
space names real keys, and a two-trial sweep maximizes the training app's validation mIoU-T."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="the sweep extra: pip install -e '.[sweep]'")

# optuna 2.10 asks for SQLAlchemy < 2, which the sweep extra pins; the warning says only that.
pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.MovedIn20Warning")

SEARCH = "hparams_search=optuna_default_cpu"


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from tracenet.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def test_optuna_config_composes_and_searches_real_keys():
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override

    cfg = _compose([SEARCH])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    parser = OverridesParser.create()
    for key, space in sweeper.params.items():
        assert OmegaConf.select(cfg, key) is not None, f"{key} is not a key of the training config"
        create_optuna_distribution_from_override(parser.parse_override(f"{key}={space}"))
    assert {"train.optim.lr", "train.optim.weight_decay", "train.batch_size"} <= set(sweeper.params)
    # The job config is the embedded default's: the search adds nothing outside hydra.
    assert OmegaConf.to_container(_compose([SEARCH]).train) == OmegaConf.to_container(_compose([]).train)


@pytest.mark.slow
def test_two_trial_sweep_reports_the_best_miou_t(tmp_path):
    from test_train_app import TINY, _train

    sweep = tmp_path / "sweep"
    args = [*TINY, "trainer.max_epochs=1", "logger=none", f"paths.data_root={tmp_path}/data"]
    result = _train([SEARCH, "hydra.sweeper.n_trials=2", *args, f"hydra.sweep.dir={sweep}"], timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    scores = [json.loads((sweep / n / "summary.json").read_text())["metrics"]["val/miou_t"] for n in "01"]
    assert best.best_value == max(scores)
    # TINY sets train.batch_size on the command line, which fixes it: the rest is searched.
    assert set(best.best_params) == set(_compose([SEARCH]).hydra.sweeper.params) - {"train.batch_size"}
    lrs = {OmegaConf.load(sweep / n / ".hydra" / "config.yaml").train.optim.lr for n in "01"}
    assert len(lrs) == 2 and all(1e-3 <= lr <= 1e-2 for lr in lrs)
