"""Measurement: parameters, MACs, output stride, receptive field and activation memory of any model."""
from .memory import MemoryTable, memory_table
from .profile import LayerRow, Profile, profile
from .receptive_field import GLOBAL

__all__ = ["GLOBAL", "LayerRow", "MemoryTable", "Profile", "memory_table", "profile"]
