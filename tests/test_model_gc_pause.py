"""Taps run without garbage-collector pauses; the collector's state is restored after."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from tracenet import TraceNet
from tracenet.models.gc_pause import no_gc_pause


def test_the_collector_is_off_inside_and_restored_after() -> None:
    was = gc.isenabled()
    try:
        gc.enable()
        with no_gc_pause:
            assert not gc.isenabled()
            with no_gc_pause:
                assert not gc.isenabled()
            assert not gc.isenabled()  # the inner block leaves it off
        assert gc.isenabled()
        gc.disable()
        with no_gc_pause:
            pass
        assert not gc.isenabled()  # a caller's choice to keep it off is kept
        gc.enable()
        with pytest.raises(RuntimeError), no_gc_pause:
            raise RuntimeError("a failed tap")
        assert gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()


@pytest.mark.parametrize("mode", ["full", "trace"])
def test_taps_prepare_run_and_decode_with_the_collector_off(mode: str, monkeypatch) -> None:
    model = TraceNet.build(
        backbone="resnet18", fpn_channels=16, mask_branch_channels=8, min_size=64, max_size=96
    )
    image = (np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)
    seen = []
    for name in ("prepare", "_tap"):
        real = getattr(TraceNet, name)
        monkeypatch.setattr(
            TraceNet,
            name,
            lambda self, *a, real=real, **k: seen.append(gc.isenabled()) or real(self, *a, **k),
        )
    was = gc.isenabled()
    gc.enable()
    try:
        model.eval().segment(image, click=(40, 30), mode=mode)
        assert gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()
    assert seen == [False, False]
