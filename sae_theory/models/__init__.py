"""SAEs on one contract (``encode``, ``decode``, ``forward``, ``dictionary``; SAELens names
``W_enc``, ``b_enc``, ``W_dec``, ``b_dec``), one method per file."""

from .base import SAE, SAEConfig, TrainOutput, UntiedSAE
from .batchtopk import BatchTopKSAE, BatchTopKSAEConfig
from .jumprelu import JumpReLUSAE, JumpReLUSAEConfig
from .matryoshka import MatryoshkaSAE, MatryoshkaSAEConfig
from .mp import MPSAE, MPResult, MPSAEConfig, matching_pursuit_reference
from .relu import ReLUSAE, ReLUSAEConfig
from .tied import TiedSAE, TiedSAEConfig
from .topk import TopKSAE, TopKSAEConfig

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
    "ReLUSAE",
    "ReLUSAEConfig",
    "SAE",
    "SAEConfig",
    "TiedSAE",
    "TiedSAEConfig",
    "TopKSAE",
    "TopKSAEConfig",
    "TrainOutput",
    "UntiedSAE",
    "matching_pursuit_reference",
]
