"""Distillation methods; importing this package registers them all."""

from . import coresets, devs, devs_plus, matching  # noqa: F401  (registration side effect)
from .base import METHODS, DistillationMethod, get_method, list_methods, register_method
from .coresets import Forgetting, Herding, KCenter, RandomSubset
from .devs import DEvS
from .devs_plus import DEvSPlus
from .matching import DistributionMatching, GradientMatching

__all__ = [
    "METHODS",
    "DEvS",
    "DEvSPlus",
    "DistillationMethod",
    "DistributionMatching",
    "Forgetting",
    "GradientMatching",
    "Herding",
    "KCenter",
    "RandomSubset",
    "get_method",
    "list_methods",
    "register_method",
]
