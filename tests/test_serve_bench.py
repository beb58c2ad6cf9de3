"""`python -m tracenet.serve.bench`: the default model and a conf/ variant measured side by side."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracenet.serve import bench


@pytest.fixture
def no_checkpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """No outputs/train/model.pt here; torch threads restored (the bench sets them process-wide)."""
    import torch

    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow  # ~12 s on the shared 2-core machine: graph captures and taps of two models
def test_bench_reports_each_model_its_preprocessing_and_the_target(no_checkpoint, capsys) -> None:
    from tracenet.config import compose

    size = compose().model.max_size
    argv = ["--model", "default", "--model", "model.min_size=32 model.max_size=32", "--reps", "1"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    default, variant = out.split("\n\ndefault: ")[1].split("\n\nmodel.min_size=32 model.max_size=32: ")
    assert "random initialisation" in default and f"{size} px on the long side" in default
    assert "32 px on the long side: the 1333×800 photo becomes 32×19, padded to 32×32" in variant
    for row in (default, variant):
        for name in (
            "cold start",
            "open image",
            "first tap",
            "second tap",
            "target: every tap answered within 1 s",
        ):
            assert name in row, (name, row)


@pytest.mark.parametrize("spec", ["nonsense", "model.no_such_key=1"])
def test_bench_refuses_a_model_it_cannot_build(no_checkpoint, capsys, spec: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--model", spec, "--reps", "1"])
    assert exit_.value.code == 2 and f"--model {spec!r}" in capsys.readouterr().err
