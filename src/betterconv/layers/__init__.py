"""Building blocks shared by every model family."""
from .aspp import ASPP, ImagePooling
from .conv import Conv2dSame, ConvNormAct, DarknetLeakyReLU, InplaceReLU, InplaceReLU6, tf_same_pad
from .inverted_residual import InvertedResidual
from .reorg import Reorg, darknet_reorg
from .separable import DepthwiseSeparableConv
from .shuffle import ChannelShuffle, ShuffleUnit, channel_shuffle
from .upsample import BilinearUpsample, bilinear_kernel

__all__ = [
    "ASPP", "ImagePooling", "Conv2dSame", "ConvNormAct", "LeakyReLU", "ReLU", "ReLU6", "tf_same_pad",
    "InvertedResidual", "Reorg", "darknet_reorg", "DepthwiseSeparableConv", "ChannelShuffle", "ShuffleUnit",
    "channel_shuffle", "BilinearUpsample", "bilinear_kernel",
]
