"""torchvision state dicts -> betterconv models.

betterconv's families register their modules in the same order as torchvision's reference models (stem, stages,
blocks, conv before norm, head, auxiliary head), so a torchvision state dict maps onto a betterconv model tensor by
tensor in order. Every pair is checked: same count, same kind (`weight`, `bias`, `running_mean`, ...) and same
shape, so a wrong architecture or configuration fails with a list of the disagreements instead of loading.

torchvision's segmentation models are configurations of betterconv's builders (`TORCHVISION_CONFIGS`).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..errors import BetterConvError

# torchvision model -> (betterconv builder, keyword arguments) giving the same architecture
TORCHVISION_CONFIGS: dict[str, tuple[str, dict]] = {
    "mobilenet_v2": ("mobilenet_v2", {}),
    "vgg16": ("vgg16", {}),
    "resnet50": ("resnet50", {}),
    "resnet101": ("resnet101", {}),
    "fcn_resnet50": ("fcn_resnet50", {"aux_head": True}),
    "fcn_resnet101": ("fcn_resnet101", {"aux_head": True}),
    "deeplabv3_resnet50": ("deeplabv3_resnet50", {"output_stride": 8, "multi_grid": None, "extra_conv": True,
                                                  "aspp_dropout": 0.5, "aux_head": True}),
    "deeplabv3_resnet101": ("deeplabv3_resnet101", {"output_stride": 8, "multi_grid": None, "extra_conv": True,
                                                    "aspp_dropout": 0.5, "aux_head": True}),
}


def looks_like_torchvision(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Which torchvision architecture family a state dict comes from, judged by its key names, or None."""
    keys = set(state_dict)
    if "classifier.0.convs.0.0.weight" in keys:
        return "deeplabv3"
    if "backbone.conv1.weight" in keys and "classifier.4.weight" in keys:
        return "fcn"
    if "conv1.weight" in keys and "layer1.0.conv1.weight" in keys:
        return "resnet"
    if "features.0.0.weight" in keys and "features.1.conv.0.0.weight" in keys:
        return "mobilenet_v2"
    if "features.0.weight" in keys and "classifier.6.weight" in keys:
        return "vgg"
    return None


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def map_torchvision_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "state dict"
                               ) -> dict[str, torch.Tensor]:
    """Rename a torchvision state dict to `model`'s names, in order, checking kind and shape of every tensor."""
    target = model.state_dict()
    theirs = list(state_dict.items())
    ours = list(target.items())
    problems = []
    if len(theirs) != len(ours):
        problems.append(f"{len(theirs)} tensors in the file, {len(ours)} in the model")
    for (tk, tv), (ok, ov) in zip(theirs, ours):
        if _kind(tk) != _kind(ok) or tuple(tv.shape) != tuple(ov.shape):
            problems.append(f"{tk} {tuple(tv.shape)} does not fit {ok} {tuple(ov.shape)}")
            break
    if problems:
        raise BetterConvError(f"{source}: not a torchvision checkpoint of this architecture: {'; '.join(problems)}")
    return {ok: tv for (_, tv), (ok, _) in zip(theirs, ours)}
