"""Distillation methods; importing this package registers them all."""

from . import coresets, devs, devs_plus, distribution_matching, gradient_matching  # noqa: F401  (registration side effect)
from .base import METHODS, DistillationMethod, get_method, list_methods, register_method
from .coresets import Forgetting, Herding, KCenter, RandomSubset
from .devs import DEvS
from .devs_plus import DEvSPlus
from .distribution_matching import DistributionMatching
from .gradient_matching import GradientMatching

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
