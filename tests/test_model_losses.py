"""Training pieces: FCOS assignment (center sampling, assign=mask, ties, levels) and losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tracenet import TraceNet
from tracenet.models.targets import BOUNDS, assign, locations

SIZES = {3: (16, 16), 4: (8, 8), 5: (4, 4), 6: (2, 2), 7: (1, 1)}  # a 128 × 128 input


def _box_of(mask: torch.Tensor) -> torch.Tensor:
    ys, xs = mask.nonzero(as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


def _at(x: int, y: int) -> int:
    """Index of the level-3 location at pixel (x, y) (level 3 comes first)."""
    return (y // 8) * 16 + x // 8


def _l_shape() -> torch.Tensor:
    """An L whose centre of mass (19.6, 40.3) is 16 px from its box centre (32, 32)."""
    m = torch.zeros(1, 128, 128, dtype=torch.bool)
    m[0, 4:60, 4:16] = True
    m[0, 52:60, 4:60] = True
    return m


def test_center_sampling_uses_the_mask_centre_of_mass():
    m = _l_shape()
    a = assign(m, _box_of(m[0])[None], SIZES, mode="center", radius=1.5)
    pos = (a.instance >= 0).nonzero().flatten()
    locs, lvl = locations(SIZES)
    com = m[0].nonzero().float().mean(0) + 0.5  # (y, x) of pixel centres
    assert len(pos) > 0 and (lvl[pos] == 0).all()
    assert ((locs[pos, 0] - com[1]).abs() < 12).all() and ((locs[pos, 1] - com[0]).abs() < 12).all()
    assert a.instance[_at(36, 36)] == -1  # the box centre is 1.5 strides away from the centre of mass
    assert a.instance[_at(20, 44)] == 0


def test_mask_assignment_follows_the_mask():
    m = _l_shape()
    a = assign(m, _box_of(m[0])[None], SIZES, mode="mask")
    assert a.instance[_at(12, 12)] == 0  # on the mask, far from its centre of mass
    assert a.instance[_at(36, 28)] == -1  # inside the box, off the mask
    assert a.instance[_at(44, 52)] == 0
    # A tap on (0..7, 56..59) falls in the cell centred at (4, 60), just off the mask: it is
    # trained too, with a box target that takes its location in.
    assert not m[0, 60, 4] and m[0, 56:60, 0:8].any()
    assert a.instance[_at(4, 60)] == 0
    fg = a.instance >= 0
    assert (a.ltrb[fg] >= 0).all()


def test_ties_go_to_the_smaller_instance_and_levels_follow_size():
    m = torch.zeros(2, 128, 128, dtype=torch.bool)
    m[0, 20:110, 20:110] = True  # big: max distance from its centre 45 > ... level 3 range
    m[1, 50:80, 50:80] = True  # small, inside the big one
    boxes = torch.stack([_box_of(m[0]), _box_of(m[1])])
    a = assign(m, boxes, SIZES, mode="mask")
    assert a.instance[_at(64, 64)] == 1
    _, lvl = locations(SIZES)
    reach = a.ltrb.max(1).values
    fg = a.instance >= 0
    lo, hi = torch.tensor(BOUNDS[:-1])[lvl], torch.tensor(BOUNDS[1:])[lvl]
    assert fg.any() and ((reach > lo) & (reach <= hi))[fg].all()
    inside = a.ltrb.min(1).values > 0  # cells that only touch the mask's edge have centerness 0
    assert (a.centerness[fg & inside] > 0).all() and (a.centerness[fg] <= 1).all()
    assert (a.centerness[~fg] == 0).all()


def _shapes(seed: int, size: int = 64) -> tuple[torch.Tensor, dict]:
    """An image with a red rectangle and a blue disc, and its targets."""
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(3, size, size, generator=g) * 0.2
    masks = torch.zeros(2, size, size, dtype=torch.bool)
    masks[0, 6 + seed : 30, 10:50] = True
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks[1] = (yy - 46) ** 2 + (xx - 30 - 3 * seed) ** 2 < 13**2
    for k, color in enumerate(([1.0, 0.2, 0.2], [0.2, 0.2, 1.0])):
        img[:, masks[k]] = torch.tensor(color)[:, None]
    boxes = torch.stack([_box_of(masks[0]), _box_of(masks[1])])
    return img, {"masks": masks, "boxes": boxes, "labels": torch.tensor([0, 1])}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["center", "mask"])
def test_losses_finite_and_decreasing_on_a_tiny_overfit(mode):
    torch.manual_seed(0)
    model = TraceNet.build(
        backbone="resnet18", fpn_channels=16, mask_branch_channels=8, max_mask_samples=16, assign=mode
    ).train()
    (i0, t0), (i1, t1) = _shapes(0), _shapes(1)
    images, targets = torch.stack([i0, i1]), [t0, t1]
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    for step in range(10):
        losses = model.compute_loss(images, targets, generator=torch.Generator().manual_seed(step))
        assert all(torch.isfinite(v) for v in losses.values()), losses
        history.append({k: v.item() for k, v in losses.items()})
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    assert set(history[0]) == {"loss", "loss_cls", "loss_box", "loss_ctr", "loss_mask"}
    assert history[-1]["loss"] < 0.75 * history[0]["loss"]
    assert history[-1]["loss_mask"] < history[0]["loss_mask"]
    assert history[-1]["loss_box"] < history[0]["loss_box"]


def test_images_without_instances_give_finite_losses_with_gradients():
    model = TraceNet.build(backbone="resnet18", fpn_channels=16, mask_branch_channels=8).train()
    empty = {
        "masks": torch.zeros(0, 64, 64, dtype=torch.bool),
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0).long(),
    }
    # batch 2: BatchNorm in training needs more than one value per channel on P7 (1 × 1 here)
    losses = model.compute_loss(torch.rand(2, 3, 64, 64), [empty, empty])
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert model.dense.heads.cls_logits.weight.grad.abs().sum() > 0


def test_bad_targets_are_named():
    model = TraceNet.build(backbone="resnet18", fpn_channels=16, mask_branch_channels=8).train()
    img, t = _shapes(0)
    with pytest.raises(ValueError, match="lacks 'labels'"):
        model.compute_loss(img[None], [{"masks": t["masks"], "boxes": t["boxes"]}])
    with pytest.raises(ValueError, match="same K instances"):
        model.compute_loss(img[None], [{**t, "labels": torch.tensor([0])}])
    with pytest.raises(ValueError, match="2 targets for a batch of 1"):
        model.compute_loss(img[None], [t, t])


def test_semantic_loss_rewards_the_foreground_and_is_training_only():
    from tracenet.models.losses import semantic_loss

    img, target = _shapes(0)
    union = target["masks"].any(0).float()
    right = torch.logit(F.avg_pool2d(union[None, None], 8).clamp(0.01, 0.99))
    assert semantic_loss(right, [target]) < semantic_loss(-right, [target])
    with_sem = TraceNet.build(
        backbone="resnet18", fpn_channels=16, mask_branch_channels=8, semantic_loss_weight=0.5
    )
    losses = with_sem.train().compute_loss(torch.stack([img, img]), [target, target])
    terms = sum(v for k, v in losses.items() if k != "loss")
    assert "loss_sem" in losses and torch.allclose(losses["loss"], terms)
    losses["loss"].backward()
    assert with_sem.semantic_head.weight.grad.abs().sum() > 0
    assert "semantic_head" not in dict(with_sem.dense.named_children())  # neither mode computes it
    assert TraceNet.build(backbone="resnet18", fpn_channels=16, mask_branch_channels=8).semantic_head is None
