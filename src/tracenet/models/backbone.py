"""torchvision backbones as fx graphs returning C3, C4, C5 (strides 8, 16, 32)."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

# torchvision node names of the last block at strides 8, 16, 32, and their channels.
_NODES = {
    "resnet18": (("layer2", "layer3", "layer4"), (128, 256, 512)),
    "resnet50": (("layer2", "layer3", "layer4"), (512, 1024, 2048)),
    "resnet101": (("layer2", "layer3", "layer4"), (512, 1024, 2048)),
    "mobilenet_v3_large": (("features.6", "features.12", "features.16"), (40, 112, 960)),
}


def backbone_channels(name: str) -> tuple[int, int, int]:
    return _NODES[name][1]


def build_backbone(name: str, pretrained: str | Path | None = None) -> nn.Module:
    """Feature extractor with outputs ``c3, c4, c5``.

    ``pretrained`` is None (random init), ``"DEFAULT"`` or a torchvision weights name (downloaded
    to the torch hub cache), or a local ``.pth`` state dict of the torchvision classifier.
    """
    if name not in _NODES:
        raise ValueError(f"backbone {name!r} is not supported; choose one of {sorted(_NODES)}")
    net = getattr(torchvision.models, name)(weights=None)
    if pretrained is not None:
        net.load_state_dict(_pretrained_state(name, pretrained))
    nodes, _ = _NODES[name]
    return create_feature_extractor(net, return_nodes=dict(zip(nodes, ("c3", "c4", "c5"), strict=True)))


def _pretrained_state(name: str, pretrained: str | Path) -> dict[str, torch.Tensor]:
    text = str(pretrained)
    enum = torchvision.models.get_model_weights(name)
    if text != "DEFAULT" and text not in enum.__members__:
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(
                f"pretrained={text!r} is neither a file nor a torchvision weights name of {name} "
                f"(one of {['DEFAULT', *enum.__members__]})"
            )
        return torch.load(path, map_location="cpu", weights_only=True)
    weights = enum.DEFAULT if text == "DEFAULT" else enum[text]
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as err:  # urllib's URLError is an OSError
        file = Path(weights.url).name
        hub = Path(torch.hub.get_dir()) / "checkpoints" / file
        raise RuntimeError(
            f"could not download the {name} weights {weights} ({err}). Offline? Fetch {weights.url} "
            f"on a connected machine, then put it at {hub} or pass pretrained='/path/to/{file}'"
        ) from err
