"""Folding inference-mode batch norm into the convolution before it.

An eval-mode `BatchNorm2d` computes ``y = (x - mean) / sqrt(var + eps) * gamma + beta``, an affine map per channel,
so after a convolution it can be folded into the convolution's weight and bias
(`torch.nn.utils.fusion.fuse_conv_bn_eval`). Pairs are found where the structure makes them certain:

* every `ConvNormAct` (`.conv` then `.bn`), betterconv's building block;
* any `nn.Sequential` whose child ``i`` is an `nn.Conv2d` and child ``i + 1`` a `BatchNorm2d` (torchvision style).

The folded batch norm is replaced by `nn.Identity`, so module names and the rest of the model stay as they were.
A batch norm without running statistics (``track_running_stats=False``) normalises with the batch's own
statistics and is left alone, as is one whose channel count does not match the convolution's.
"""
from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fuse_batch_norm"]


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d and bn.track_running_stats
            and bn.running_mean is not None and bn.num_features == conv.out_channels)


def fuse_batch_norm(model: nn.Module) -> nn.Module:
    """A copy of `model`, in eval mode, with every batch norm that directly follows a convolution folded into it.

    The copy computes what `model.eval()` computes (to float rounding); `model` itself is not changed. The copy is
    for inference only: training it would no longer normalise. Attributes that `create_model` recorded
    (`model_name`, `model_kwargs`) are kept.
    """
    fused = copy.deepcopy(model).eval()
    for parent in fused.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = parent._modules[first], parent._modules[second]
            if _foldable(conv, bn):
                parent._modules[first] = fuse_conv_bn_eval(conv, bn)
                parent._modules[second] = nn.Identity()
    return fused


def count_batch_norms(model: nn.Module) -> int:
    """How many `BatchNorm2d` modules are left in `model` (0 after folding every conv -> bn pair)."""
    return sum(1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
