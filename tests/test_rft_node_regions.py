"""`TracePlan.node_regions()`: each traced node's region with its module, inputs, map size and
stride, the public view that the demo's regions overlay reads."""

from __future__ import annotations

import torch
from torch import nn

from tracenet.rft import trace


class Net(nn.Module):
    """A stride-2 stem, a stride-4 branch, and a functional add of the upsampled branch."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.down = nn.Conv2d(8, 8, 3, 2, 1)
        self.head = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        s2 = self.stem(x)
        up = nn.functional.interpolate(self.down(s2), size=s2.shape[-2:], mode="nearest")
        return {"out": self.head(s2 + up)}


SHAPE = (1, 3, 40, 56)


def test_node_regions_match_plan_regions_with_module_inputs_size_and_stride() -> None:
    torch.manual_seed(0)
    plan = trace(Net().eval(), SHAPE, targets={"out": (3, 6, 10, 14)})
    nodes = plan.node_regions()
    assert [n.name for n in nodes] == list(plan.regions)  # the same nodes, input to output
    assert {n.name: n.region for n in nodes} == plan.regions
    by_module = {n.module: n for n in nodes if n.module is not None}
    assert {"stem.0", "stem.1", "down", "head"} <= set(by_module)

    stem, down, head = by_module["stem.0"], by_module["down"], by_module["head"]
    assert stem.size == (20, 28) and stem.stride == (2.0, 2.0) and stem.kind == "conv2d"
    assert down.size == (10, 14) and down.stride == (4.0, 4.0)
    assert head.size == (20, 28) and head.region == (3, 6, 10, 14)

    # Functions have no module and name what they read: the add reads the stem and the upsample.
    add = next(n for n in nodes if n.module is None and len(n.inputs) == 2)
    names = {n.name: n for n in nodes}
    assert {names[i].module for i in add.inputs} == {"stem.1", None}
    assert head.inputs == (add.name,)
    for n in nodes:
        y0, y1, x0, x1 = n.region
        assert 0 <= y0 < y1 <= n.size[0] and 0 <= x0 < x1 <= n.size[1], n
        assert set(n.inputs) <= set(names) and n.name not in n.inputs
