"""Exact taps from a windowed TraceNet artifact: fall back to an exact artifact where it clips.

A TraceNet artifact with a mask window (``export.mask_window`` M) computes the mask branch on
``M×M`` stride-8 cells only; a mask region larger than that is clipped (``TapMask.clipped``).
:class:`ExactTap` never returns a clipped mask: such a tap is answered by an exact artifact of
the same model, format, precision and size, and the result says so (``TapMask.fallback``). By
default (:func:`exact_artifact`) that is the dense-mask TraceNet the export stage writes beside
it (``{backbone}_tracedense_{S}``: TraceNet without a mask window, ≈ 0.55× FullNet at R-50),
else the FullNet artifact (:func:`partner`, ≈ 1×).

- With a prompt box the region is known before any call (``decode.mask_region``): a region
  larger than M cells goes straight to the exact artifact, the TraceNet call is skipped.
- Otherwise (the predicted box, or a prompt region that fits but is reported clipped through
  float32 rounding at a cell edge) the TraceNet artifact runs first and a clipped result is
  recomputed by the exact artifact.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tracenet.export import host, metadata, runners
from tracenet.export.build import DENSE_MASK
from tracenet.models import decode
from tracenet.models.config import MASK_STRIDE, ModelConfig
from tracenet.models.preprocess import check_box


def window_cells(meta: dict) -> int | None:
    """The artifact's mask window in cells, or None where it covers the whole map (exact)."""
    m = (meta.get("mask_window") or {}).get("cells")
    n = meta["input_size"][0] // MASK_STRIDE
    return None if m is None or int(m) >= n else int(m)


def partner(path: str | Path, kind: str = "full") -> Path:
    """The ``kind`` artifact beside a TraceNet artifact: ``{backbone}_{kind}_{S}[_int8].{ext}``
    (``full``: FullNet; ``tracedense``: the dense-mask TraceNet)."""
    path = Path(path)
    if "_trace_" not in path.name:
        raise ValueError(f"{path.name} is not a TraceNet artifact (no '_trace_' in its name)")
    return path.with_name(path.name.replace("_trace_", f"_{kind}_", 1))


def exact_candidates(path: str | Path) -> list[Path]:
    """The exact artifacts a windowed TraceNet artifact falls back to, in order of preference:
    the dense-mask TraceNet (cheaper), then FullNet."""
    return [partner(path, DENSE_MASK), partner(path, "full")]


def exact_artifact(path: str | Path) -> Path:
    """The fallback the host uses for the TraceNet artifact at ``path``: the first of
    :func:`exact_candidates` that exists (``FileNotFoundError`` naming them when none does)."""
    for candidate in exact_candidates(path):
        if candidate.is_file():
            return candidate
    names = " or ".join(c.name for c in exact_candidates(path))
    raise FileNotFoundError(
        f"{Path(path).name} clips mask regions larger than its window and falls back to {names}, "
        f"which are missing: export both modes (export.formats as for {Path(path).name})"
    )


def prompt_fits(fi: host.FixedInput, cfg: ModelConfig, box, mask_window: int | None) -> bool:
    """Whether the mask region of a prompt ``box`` (input pixels) fits the mask window."""
    if box is None or mask_window is None:
        return True
    geo = fi.geo
    ry0, ry1, rx0, rx1 = decode.mask_region(geo.box_to_resized(check_box(box, geo)), cfg.margin, geo)
    return ry1 - ry0 <= mask_window and rx1 - rx0 <= mask_window


class ExactTap:
    """``ExactTap(trace, exact, cfg, mask_window)(fi, click, box=None) -> TapMask``, never clipped.

    ``trace`` and ``exact`` are runners (``tracenet.export.runners``); ``exact`` must compute the
    mask branch on the whole map (the dense-mask TraceNet, or FullNet). ``mask_window``:
    the TraceNet artifact's window in cells (None: it is exact itself and ``exact`` is never used).
    ``calls`` counts the calls made to each artifact.
    """

    def __init__(self, trace, exact, cfg: ModelConfig, mask_window: int | None) -> None:
        if mask_window is not None and exact is None:
            raise ValueError("a TraceNet artifact with a mask window needs an exact artifact to fall back to")
        self.trace, self.exact, self.cfg, self.mask_window = trace, exact, cfg, mask_window
        self.calls = {"trace": 0, "exact": 0}

    def __call__(self, fi: host.FixedInput, click, box=None) -> host.TapMask:
        inputs = host.tap_inputs(fi, click, box)
        if not prompt_fits(fi, self.cfg, box, self.mask_window):
            return self._exact(inputs, fi, box)
        self.calls["trace"] += 1
        return self.resolve(self.trace(**inputs), inputs, fi, box)

    def resolve(self, out: dict, inputs: dict, fi: host.FixedInput, box=None) -> host.TapMask:
        """The tap's mask from the TraceNet artifact's outputs ``out`` for ``inputs``; a clipped
        one is recomputed by the exact artifact."""
        got = host.decode_outputs(out, fi.geo, self.cfg, box)
        return self._exact(inputs, fi, box) if got.clipped else got

    def _exact(self, inputs: dict, fi: host.FixedInput, box) -> host.TapMask:
        self.calls["exact"] += 1
        got = host.decode_outputs(self.exact(**inputs), fi.geo, self.cfg, box)
        if got.clipped:  # the exact artifact's window is the whole map: it cannot clip
            raise RuntimeError(f"the fallback artifact clipped region {got.region} to {got.window}")
        return replace(got, fallback=True)


def load(path: str | Path, cfg: ModelConfig, threads: int = 1, exact: str | Path | None = None) -> ExactTap:
    """An :class:`ExactTap` for the artifact at ``path``; a windowed TraceNet artifact loads its
    fallback too: ``exact`` (any artifact of the same model and size without a mask window)
    or else :func:`exact_artifact` (the dense-mask TraceNet beside it, else FullNet;
    ``FileNotFoundError`` naming them when both are missing)."""
    path = Path(path)
    meta = metadata.read(path)
    window = window_cells(meta)
    fallback_runner = None
    if window is not None:
        full = exact_artifact(path) if exact is None else Path(exact)
        if not full.is_file():
            raise FileNotFoundError(
                f"{path.name} clips mask regions larger than {window} cells and falls back to {full.name}, "
                f"which is missing: export both modes (export.formats as for {path.name})"
            )
        other = metadata.read(full)
        if window_cells(other) is not None or (other["backbone"], other["input_size"]) != (
            meta["backbone"],
            meta["input_size"],
        ):
            raise ValueError(f"{full.name} is not an exact artifact of {path.name}'s model and size")
        fallback_runner = runners.load(full, threads)
    return ExactTap(runners.load(path, threads), fallback_runner, cfg, window)
