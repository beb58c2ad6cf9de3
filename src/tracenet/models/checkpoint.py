"""Checkpoints: a plain dict of tensors and options, written atomically and read with weights_only."""

from __future__ import annotations

from pathlib import Path

import torch

from tracenet.atomic import atomic_file

FORMAT = "tracenet-v1"


def save(path: str | Path, options: dict, state_dict: dict[str, torch.Tensor]) -> Path:
    path = Path(path)
    payload = {"format": FORMAT, "options": options, "state_dict": state_dict}
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)
    return path


def load(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(options, state_dict), refusing files that are not ours or hold non-finite weights."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip errors have many types; say what to do
        raise ValueError(
            f"{path} is not a loadable TraceNet checkpoint ({type(err).__name__}: {err}); "
            "write it with TraceNet.save_checkpoint"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} checkpoint (write one with TraceNet.save_checkpoint)")
    options, state = payload["options"], payload["state_dict"]
    bad = [
        k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()
    ]
    if bad:
        raise ValueError(f"{path}: non-finite (NaN/inf) weights in {len(bad)} tensors, e.g. {bad[:3]}")
    return dict(options), state
