"""BatchNorm recalibration of a random-weight model before export (``export.checkpoint: null``).

A freshly built model has BatchNorm running statistics (mean 0, var 1), so in eval mode every
BN layer is the identity. The head predictors are initialized with std 0.01 and zero bias, and
each 3×3 tower conv (fan-in 2304 at 256 channels) then scales its input by ≈ 0.01·√2304·0.7 ≈
0.34: after four tower layers and the controller, the dynamic mask head's parameters are
≈ 1e-3 and its logits ≈ 1e-8. Masks (logit > 0) are then decided by float rounding, and an
artifact that agrees with PyTorch to 1e-10 can still reach mask IoU 0 (measured:
MobileNetV3-L at 384). Trained weights do not have this: their BN statistics bring every layer
to unit scale.

:func:`recalibrate_batchnorm` gives the random weights the same property: it resets every
BatchNorm's running statistics and runs one forward pass in train mode with ``momentum=None``
(a cumulative average, so the statistics are exactly those of the batch) over a few images,
then returns the model in eval mode. Activations then have unit scale per channel, the
controller's outputs are O(0.3) and the mask logits O(0.1–1). Only BN statistics change; no
weight is trained. Trained checkpoints are exported untouched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tracenet.export import host
from tracenet.models.tracenet import TraceNet

IMAGES = 8  # images in the calibration batch


def recalibrate_batchnorm(model: TraceNet, images: torch.Tensor) -> int:
    """Set every BatchNorm's running statistics to those of ``images`` (``[N,3,S,S]``, the
    normalized network input) through the model in train mode; the model is left in eval mode.
    Returns the number of BatchNorm layers recalibrated."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, exactly the batch's statistics
    model.train()
    try:
        with torch.no_grad():
            model.dense(images)
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.eval()
    return len(norms)


def synthetic_images(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` RGB uint8 images (240×320) with spatial structure: random colour fields at 1/16
    resolution upsampled bilinearly, plus pixel noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 15, 20)).astype(np.float32))
        smooth = F.interpolate(coarse, size=(240, 320), mode="bilinear", align_corners=False)[0]
        noisy = smooth.permute(1, 2, 0).numpy() + rng.normal(0, 12, (240, 320, 3))
        out.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return out


def calibration_batch(model: TraceNet, size: int, data: str | Path | None, n: int = IMAGES):
    """The calibration batch at input ``size`` (``host.prepare``: resized, normalized, padded as
    the artifact sees images) and its description: the first ``n`` val images of the COCO folder
    ``data`` that have instances when it exists (verify's images), else ``synthetic_images``."""
    images, source = None, None
    if data is not None and Path(data).is_dir():
        from tracenet.export.verify import coco_samples

        images = [image for image, _ in coco_samples(data, n)]
        source = f"{Path(data).name} val2017, first {len(images)} images with instances"
    if not images:
        images = synthetic_images(n)
        source = f"{n} synthetic images (smooth random colour fields + noise, seed 0)"
    batch = np.concatenate([host.prepare(image, model.cfg, size).image for image in images])
    return torch.from_numpy(batch), source


def calibrate_random_weights(model: TraceNet, size: int, data: str | Path | None, seed: int) -> dict:
    """Recalibrate ``model``'s BatchNorm statistics (:func:`recalibrate_batchnorm`) on
    :func:`calibration_batch`; returns the description the artifacts' metadata carries."""
    batch, source = calibration_batch(model, size, data)
    layers = recalibrate_batchnorm(model, batch)
    return {
        "source": f"random initialization (torch.manual_seed({seed})), not trained",
        "batchnorm": {
            "recalibrated": True,
            "layers": layers,
            "images": int(batch.shape[0]),
            "data": source,
            "input_size": size,
            "why": "with the initial statistics (0, 1) activations shrink through the std-0.01 heads "
            "and mask logits are ~1e-8, so masks would be decided by float rounding; one train-mode "
            "pass (momentum=None) sets every BN to unit-scale outputs, as trained weights have "
            "(docs/export.md)",
        },
    }
