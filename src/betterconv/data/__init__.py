"""Datasets, class names and preprocessing."""
