"""devs: dataset distillation with DEvS and the baselines it is compared against.

    import devs
    data = devs.load_dataset("digits")
    result = devs.DEvS(ipc=10, random_state=0).fit(data).distilled_
    result.save("digits.safetensors")
    print(devs.evaluate(result, data, protocol="dc", runs=3).summary())
"""

__version__ = "0.1.0"

from .data import ImageDataset, ImageSplit, list_datasets, load_dataset  # noqa: E402
from .packing import pack_store  # noqa: E402
from .errors import DevsError  # noqa: E402
from .evaluate import EvaluationResult, evaluate, evaluate_random_baseline, evaluate_whole_set, list_protocols  # noqa: E402
from .io import DistilledSet, load_distilled  # noqa: E402
from .methods import (  # noqa: E402
    DEvS,
    DEvSPlus,
    DistributionMatching,
    Forgetting,
    GradientMatching,
    Herding,
    KCenter,
    RandomSubset,
    get_method,
    list_methods,
)
from .models import ConvNet, list_models  # noqa: E402
from .recipes import resolve_recipe  # noqa: E402

__all__ = [
    "ConvNet",
    "DEvS",
    "DEvSPlus",
    "DevsError",
    "DistilledSet",
    "DistributionMatching",
    "EvaluationResult",
    "Forgetting",
    "GradientMatching",
    "Herding",
    "ImageDataset",
    "ImageSplit",
    "KCenter",
    "RandomSubset",
    "evaluate",
    "pack_store",
    "evaluate_random_baseline",
    "evaluate_whole_set",
    "get_method",
    "list_datasets",
    "list_methods",
    "list_models",
    "list_protocols",
    "load_dataset",
    "load_distilled",
    "resolve_recipe",
]
