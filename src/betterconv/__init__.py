"""betterconv: FCN, DeepLabv3, YOLOv2 and MobileNetV2, faithful to their papers, with the tools to measure them."""
from .analysis import memory_table, profile
from .errors import BetterConvError
from .interop.darknet import from_darknet, load_darknet_weights, save_darknet_weights
from .models import FeatureInfo, ModelInfo, list_models, model_info
from .weights import convolutionalize, create_model, load_weights, save_weights

__version__ = "0.1.0"
__all__ = ["BetterConvError", "FeatureInfo", "ModelInfo", "convolutionalize", "create_model", "from_darknet",
           "list_models", "load_darknet_weights", "load_weights", "memory_table", "model_info", "profile",
           "save_darknet_weights", "save_weights", "__version__"]
