"""`tracenet segment`: files written, figures printed, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tracenet.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    from tracenet import TraceNet

    torch.manual_seed(0)
    model = TraceNet.build(backbone="resnet18", min_size=64, max_size=96).eval()
    return model.save_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(path)
    return path


def test_segment_writes_mask_and_overlay_and_prints_costs(checkpoint, photo, tmp_path, capsys):
    out, ov = tmp_path / "mask.png", tmp_path / "overlay.png"
    args = [str(photo), "--click", "40,30", "--checkpoint", str(checkpoint), "--out", str(out)]
    assert main(["segment", *args, "--overlay", str(ov), "--compare"]) == 0
    mask = np.asarray(Image.open(out))
    assert mask.shape == (70, 90) and set(np.unique(mask)) <= {0, 255}
    assert np.asarray(Image.open(ov)).shape == (70, 90, 3)
    printed = capsys.readouterr().out
    assert "level P" in printed and "trace:" in printed and "full:" in printed
    assert "masks identical: True" in printed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--click", "500,30"], "outside"),
        (["--click", "40,30", "--box", "1,2,3"], "--box must be"),
    ],
)
def test_bad_input_is_one_clear_line(checkpoint, photo, tmp_path, capsys, extra, message):
    args = [str(photo), *extra, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "m.png")]
    assert main(["segment", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "m.png").exists()


def test_missing_default_checkpoint_says_what_to_run(photo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["segment", str(photo), "--click", "1,1", "--out", "m.png"]) == 2
    assert "make demo" in capsys.readouterr().err


def test_unreadable_image_is_named(checkpoint, tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    assert (
        main(["segment", str(bad), "--click", "1,1", "--checkpoint", str(checkpoint), "--out", "m.png"]) == 2
    )
    assert "notes.png" in capsys.readouterr().err


def test_click_must_be_two_integers():
    with pytest.raises(SystemExit):
        main(["segment", "x.png", "--click", "1;2", "--out", "m.png"])
