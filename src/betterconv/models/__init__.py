"""The model zoo. Importing this package registers every builder."""
from . import darknet, deeplabv3, fcn, mobilenet_v1, mobilenet_v2, resnet, shufflenet, vgg, yolov2  # noqa: F401
from ._features import FeatureInfo
from ._registry import create_model, list_models, model_arguments, paper_input_size, register_model

__all__ = ["FeatureInfo", "create_model", "list_models", "model_arguments", "paper_input_size", "register_model"]
