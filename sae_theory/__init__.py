"""sae_theory: the claims of the GBA and MP-SAE papers, made checkable.

Flat public API: what the README uses for both papers (the generative models, the theory
checks, the SAEs and their registry, the trainer and its hooks, saving and loading, the main
metrics, profiles and figures). The subpackages hold the rest (``sae_theory.data``,
``sae_theory.theory``, ``sae_theory.models``, ``sae_theory.training``, ``sae_theory.metrics``,
``sae_theory.experiments``, ``sae_theory.plotting``, ``sae_theory.profiles``).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sae_theory")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "unknown"

from .data import HierarchicalFeatureModel, SparseFeatureModel
from .io import load_sae, save_sae
from .metrics import feature_recovery_rate, fvu, l0, max_cosine_similarity
from .models import (
    MPSAE,
    SAE,
    BatchTopKSAE,
    JumpReLUSAE,
    MatryoshkaSAE,
    ReLUSAE,
    TiedReLUSAE,
    TiedSAE,
    TiedTopKSAE,
    TopKSAE,
    build_sae,
    matching_pursuit_reference,
    register_sae,
)
from .plotting import save_figure, use_style
from .profiles import Profile, get_profile, set_threads
from .saelens import export_saelens, import_saelens
from .theory.conditions import check_identifiability
from .training import GBAConfig, GroupBiasAdaptation, SparsityController, TrainConfig, train

__all__ = [
    "BatchTopKSAE",
    "GBAConfig",
    "GroupBiasAdaptation",
    "HierarchicalFeatureModel",
    "JumpReLUSAE",
    "MPSAE",
    "MatryoshkaSAE",
    "Profile",
    "ReLUSAE",
    "SAE",
    "SparseFeatureModel",
    "SparsityController",
    "TiedReLUSAE",
    "TiedSAE",
    "TiedTopKSAE",
    "TopKSAE",
    "TrainConfig",
    "__version__",
    "build_sae",
    "check_identifiability",
    "export_saelens",
    "feature_recovery_rate",
    "fvu",
    "get_profile",
    "import_saelens",
    "l0",
    "load_sae",
    "matching_pursuit_reference",
    "max_cosine_similarity",
    "register_sae",
    "save_figure",
    "save_sae",
    "set_threads",
    "train",
    "use_style",
]
