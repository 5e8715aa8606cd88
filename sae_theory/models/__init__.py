"""SAEs on one contract (``encode``, ``decode``, ``forward``, ``dictionary``; SAELens names
``W_enc``, ``b_enc``, ``W_dec``, ``b_dec``), one method per file, each registered in
:mod:`sae_theory.models.registry`.

The imports below fix the order of the methods in every plot (registration order); after them,
every other module of this package is imported too, so a new model file registers itself without
an edit here.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from .base import SAE, SAEConfig, TrainOutput, UntiedSAE
from .mp import MPSAE, MPResult, MPSAEConfig, matching_pursuit_reference
from .relu import ReLUSAE, ReLUSAEConfig
from .topk import TopKSAE, TopKSAEConfig
from .batchtopk import BatchTopKSAE, BatchTopKSAEConfig
from .jumprelu import JumpReLUSAE, JumpReLUSAEConfig
from .matryoshka import MatryoshkaSAE, MatryoshkaSAEConfig
from .tied import TiedSAE, TiedSAEConfig
from .tied_baselines import TiedReLUSAE, TiedReLUSAEConfig, TiedTopKSAE, TiedTopKSAEConfig
from .registry import RegisteredSAE, build_sae, family_of, get_sae, method_order, register_sae, registered_saes

for _module in sorted(m.name for m in _pkgutil.iter_modules(__path__)):
    _importlib.import_module(f"{__name__}.{_module}")

__all__ = [
    "BatchTopKSAE",
    "BatchTopKSAEConfig",
    "JumpReLUSAE",
    "JumpReLUSAEConfig",
    "MatryoshkaSAE",
    "MatryoshkaSAEConfig",
    "MPResult",
    "MPSAE",
    "MPSAEConfig",
    "RegisteredSAE",
    "ReLUSAE",
    "ReLUSAEConfig",
    "SAE",
    "SAEConfig",
    "TiedReLUSAE",
    "TiedReLUSAEConfig",
    "TiedSAE",
    "TiedSAEConfig",
    "TiedTopKSAE",
    "TiedTopKSAEConfig",
    "TopKSAE",
    "TopKSAEConfig",
    "TrainOutput",
    "UntiedSAE",
    "build_sae",
    "family_of",
    "get_sae",
    "matching_pursuit_reference",
    "method_order",
    "register_sae",
    "registered_saes",
]
