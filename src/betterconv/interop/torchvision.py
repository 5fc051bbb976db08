"""torchvision state dicts -> betterconv models.

betterconv's families register their modules in the same order as torchvision's reference models (stem, stages,
blocks, conv before norm, head, auxiliary head), so a torchvision state dict maps onto a betterconv model tensor by
tensor in order. Every pair is checked: same count, same kind (`weight`, `bias`, `running_mean`, ...) and same
shape, so a wrong architecture or configuration fails with a list of the disagreements instead of loading.

torchvision's segmentation models are configurations of betterconv's builders: each model's `ModelInfo` names its
torchvision peer (`torchvision`) and the builder keywords that give its configuration (`torchvision_config`).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..errors import BetterConvError
from ..models import model_info
from ..models.vgg import VGG, VGG16_STAGES


def torchvision_family(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The torchvision architecture family ("deeplabv3", "fcn", "resnet", "mobilenet_v2", "vgg") a state dict comes
    from, judged by its key names; None when it does not look like a torchvision state dict."""
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


def torchvision_config(name: str) -> dict:
    """The builder keywords giving torchvision's configuration of betterconv's `name` ({} when it has none)."""
    return dict(model_info(name).torchvision_config)


def vgg_from_torchvision(classifier: nn.Module) -> VGG:
    """betterconv's VGG16 holding the weights of torchvision's `VGG` (16 layers, no batch norm)."""
    converted = VGG(VGG16_STAGES, num_classes=classifier.classifier[-1].out_features)
    converted.load_state_dict(map_torchvision_state_dict(converted, classifier.state_dict(), "torchvision VGG"))
    return converted.train(classifier.training)
