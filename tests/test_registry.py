"""Each registered model's facts (`ModelInfo`): consistent with the model itself, and read by the tools that used
to dispatch on name prefixes."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.models import segmentation

from betterconv import BetterConvError
from betterconv.models import ClsRecipe, DetRecipe, ModelInfo, SegRecipe, create_model, list_models, model_info
from betterconv.models import register_model
from betterconv.models.info import DARKNET_MEAN, IMAGENET_MEAN
from betterconv.tasks import classification, segmentation as seg_task

RECIPE_OF_TASK = {"classification": ClsRecipe, "segmentation": SegRecipe, "detection": DetRecipe}


@pytest.mark.parametrize("name", list_models())
def test_every_model_has_a_consistent_record(name):
    info = model_info(name)
    assert isinstance(info.recipe, RECIPE_OF_TASK[info.task])
    assert len(info.input_size) == 2 and all(isinstance(v, int) and v > 0 for v in info.input_size)
    assert len(info.mean) == len(info.std) == 3 and all(s > 0 for s in info.std)
    if info.backbone_classifier is not None:
        assert model_info(info.backbone_classifier).task == "classification"
    if info.torchvision is not None:
        family = segmentation if info.task == "segmentation" else torchvision.models
        assert callable(getattr(family, info.torchvision))
    else:
        assert not info.torchvision_config


def test_records_replace_prefix_dispatch():
    """darknet's models are normalised as darknet feeds them (x / 255), the others with ImageNet statistics;
    FCN-ResNet trains with torchvision's reference recipe, not FCN-VGG's (batch 1, momentum 0.99)."""
    assert model_info("yolov2").mean == model_info("yolov2_tiny").mean == DARKNET_MEAN
    assert model_info("mobilenet_v2").mean == model_info("deeplabv3_resnet50").mean == IMAGENET_MEAN
    fcn_resnet, fcn_vgg = seg_task.recipe_for("fcn_resnet50"), seg_task.recipe_for("fcn8s_vgg16")
    assert (fcn_resnet.lr, fcn_resnet.momentum, fcn_resnet.weight_decay) == (0.02, 0.9, 1e-4)
    assert fcn_resnet.schedule == "poly"
    assert (fcn_resnet.batch_size, fcn_resnet.crop_size, fcn_resnet.epochs, fcn_resnet.aux_weight) == (32, 480, 30, 0.5)
    assert (fcn_vgg.batch_size, fcn_vgg.momentum) == (1, 0.99)
    assert seg_task.recipe_for("deeplabv3_mobilenet_v2").weight_decay == 4e-5  # MobileNetV2 §6.3
    assert seg_task.recipe_for("deeplabv3_resnet50").weight_decay == 1e-4  # DeepLabv3 §4.1
    assert classification.recipe_for("mobilenet_v1").optimizer == "rmsprop"
    assert classification.recipe_for("shufflenet_v1").optimizer == "sgd"
    with pytest.raises(BetterConvError, match="not a segmentation model"):
        seg_task.recipe_for("mobilenet_v2")


def test_registration_needs_a_record_and_keyword_only_arguments():
    with pytest.raises(TypeError, match="ModelInfo"):
        register_model("classification")
    with pytest.raises(RuntimeError, match="keyword-only"):
        register_model(ModelInfo("classification"), name="test_positional")(lambda width: torch.nn.Identity())
    with pytest.raises(ValueError, match="task"):
        ModelInfo("captioning")
    with pytest.raises(BetterConvError, match="did you mean"):
        model_info("mobilenet_v3")


def test_deeplab_rates_mean_the_same_for_every_backbone():
    """`atrous_rates=None` is the paper's rates for the output stride on every backbone; MobileNetV2's default is
    `()`, its §6.3 head without atrous branches."""
    small = dict(num_classes=3, width_mult=0.35)
    assert create_model("deeplabv3_mobilenet_v2", **small).head.aspp.atrous_rates == ()
    assert create_model("deeplabv3_mobilenet_v2", atrous_rates=None, **small).head.aspp.atrous_rates == (6, 12, 18)
