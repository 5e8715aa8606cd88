"""sae_theory: the claims of the GBA and MP-SAE papers, made checkable.

Flat public API; the subpackages hold the rest (``sae_theory.data``, ``sae_theory.theory``,
``sae_theory.models``, ``sae_theory.training``, ``sae_theory.metrics``,
``sae_theory.experiments``, ``sae_theory.plotting``, ``sae_theory.profiles``).
"""

from importlib.metadata import PackageNotFoundError, version

from .data import SparseFeatureModel
from .metrics import feature_recovery_rate
from .models import ReLUSAE, TiedSAE, TopKSAE
from .plotting import save_figure, use_style
from .profiles import Profile, get_profile, set_threads
from .theory.conditions import check_identifiability
from .training import GBAConfig, GroupBiasAdaptation, TrainConfig, train

try:
    __version__ = version("sae_theory")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "unknown"

__all__ = [
    "GBAConfig",
    "GroupBiasAdaptation",
    "Profile",
    "ReLUSAE",
    "SparseFeatureModel",
    "TiedSAE",
    "TopKSAE",
    "TrainConfig",
    "__version__",
    "check_identifiability",
    "feature_recovery_rate",
    "get_profile",
    "save_figure",
    "set_threads",
    "train",
    "use_style",
]
