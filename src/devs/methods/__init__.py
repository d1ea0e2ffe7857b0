"""Distillation methods; importing this package registers them all."""

from . import coresets, devs  # noqa: F401  (registration side effect)
from .base import METHODS, DistillationMethod, get_method, list_methods, register_method
from .coresets import RandomSubset
from .devs import DEvS

__all__ = ["METHODS", "DEvS", "DistillationMethod", "RandomSubset", "get_method", "list_methods", "register_method"]
