"""Eval-mode BatchNorm folded into the convolution before it, for inference in both modes.

A folded BatchNorm is a per-channel scale and shift of the convolution's weights and bias:
the same function (up to float rounding), one pass over the activations fewer. Trace mode
computes the backbone whole for most taps (P7's receptive field spans the image), so the
backbone's BatchNorm passes cost it as much as they cost the full forward: folding them is a
deployment standard (ONNX and TFLite exporters do it) that both modes get alike.
"""

from __future__ import annotations

import itertools
from collections import Counter

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from tracenet.rft.rules.conv_kernel import memory_format


def fold_batchnorm(module: nn.Module) -> fx.GraphModule:
    """An eval-mode copy of `module` as an fx graph where every BatchNorm2d that only reads a
    Conv2d (read by nothing else) is that convolution, its weights scaled. A convolution
    shared by several BatchNorms (the heads' towers: one per level) becomes one folded
    convolution per BatchNorm, laid out as the convolution's weights are. `module` must be in
    eval mode (running statistics) and is left untouched; the copy shares its other layers."""
    if module.training:
        raise ValueError("fold_batchnorm needs eval-mode BatchNorm statistics: call module.eval() first")
    gm = fx.symbolic_trace(module)
    modules = dict(gm.named_modules())
    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    for bn_node in list(gm.graph.nodes):
        conv_node = bn_node.args[0] if bn_node.op == "call_module" and bn_node.args else None
        if not (
            isinstance(conv_node, fx.Node)
            and conv_node.op == "call_module"
            and isinstance(modules[conv_node.target], nn.Conv2d)
            and isinstance(modules[bn_node.target], nn.BatchNorm2d)
            and modules[bn_node.target].track_running_stats
            and calls[bn_node.target] == 1
            and len(conv_node.users) == 1
        ):
            continue
        conv = modules[conv_node.target]
        folded = fuse_conv_bn_eval(conv, modules[bn_node.target])
        layout = memory_format(conv.weight)
        folded.weight = nn.Parameter(folded.weight.detach().contiguous(memory_format=layout), False)
        gm.add_submodule(str(bn_node.target), folded)  # the BatchNorm's place, now a convolution
        bn_node.args = conv_node.args
        bn_node.kwargs = conv_node.kwargs
        gm.graph.erase_node(conv_node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.eval()


def weights_key(module: nn.Module) -> tuple[tuple[int, int], ...]:
    """Changes whenever any parameter or buffer is replaced or written in place (its storage or
    version counter), so a folded copy can tell it is stale. Writes through ``.data`` bypass
    the version counter and are not seen."""
    tensors = itertools.chain(module.parameters(), module.buffers())
    return tuple((t.data_ptr(), t._version) for t in tensors if isinstance(t, torch.Tensor))
