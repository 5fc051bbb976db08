"""The model zoo. Importing this package registers every builder with its `ModelInfo` record."""
from . import darknet, deeplabv3, fcn, mobilenet_v1, mobilenet_v2, resnet, shufflenet, vgg, yolov2  # noqa: F401
from ._features import FeatureInfo
from ._registry import (build, check_arguments, create_model, get_builder, list_models, model_arguments, model_info,
                        paper_input_size, register_model, shorten, show_value)
from .info import ClsRecipe, DetRecipe, ModelInfo, SegRecipe

__all__ = ["ClsRecipe", "DetRecipe", "FeatureInfo", "ModelInfo", "SegRecipe", "build", "check_arguments",
           "create_model", "get_builder", "list_models", "model_arguments", "model_info", "paper_input_size",
           "register_model", "shorten", "show_value"]
