"""Weights from other frameworks: torchvision, darknet, TFLite."""
