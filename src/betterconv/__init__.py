"""betterconv: FCN, DeepLabv3, YOLOv2 and MobileNetV2, faithful to their papers, with the tools to measure them."""
from .analysis import memory_table, profile
from .errors import BetterConvError
from .models import FeatureInfo, create_model, list_models
from .interop.darknet import from_darknet, load_darknet_weights, save_darknet_weights
from .models.fcn import convolutionalize
from .weights import load_weights, save_weights

__version__ = "0.1.0"
__all__ = ["BetterConvError", "FeatureInfo", "convolutionalize", "create_model", "from_darknet", "list_models",
           "load_darknet_weights", "load_weights", "memory_table", "profile", "save_darknet_weights", "save_weights",
           "__version__"]
