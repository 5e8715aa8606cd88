"""Training: one generic loop (:func:`train`) for every SAE, its config, data sources and
checkpoints. Method-specific pieces are model methods or post-step hooks."""

from .sources import BatchSource, FeatureModelSource, HierarchicalSource, SamplerSource, TensorSource, as_source
from .config import TrainConfig, lr_at
from .history import History
from .checkpoint import latest_checkpoint, load_checkpoint, resolve_checkpoint, save_checkpoint
from .trainer import train

# -- post-step hooks ------------------------------------------------------------------------
from .sparsity import CONTROLLER_RULES, SparsityController
from .bias_adaptation import GBAConfig, GroupBiasAdaptation, bias_update, bias_update_reference, group_assignment, target_frequencies

__all__ = [
    "BatchSource",
    "CONTROLLER_RULES",
    "SparsityController",
    "GBAConfig",
    "GroupBiasAdaptation",
    "bias_update",
    "bias_update_reference",
    "group_assignment",
    "target_frequencies",
    "FeatureModelSource",
    "HierarchicalSource",
    "History",
    "SamplerSource",
    "TensorSource",
    "TrainConfig",
    "as_source",
    "latest_checkpoint",
    "load_checkpoint",
    "lr_at",
    "resolve_checkpoint",
    "save_checkpoint",
    "train",
]
