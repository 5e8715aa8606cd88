"""Training: one generic loop (:func:`train`) for every SAE, its config, data sources and
checkpoints. Method-specific pieces are model methods or post-step hooks (STYLE.md §4)."""

from .sources import BatchSource, FeatureModelSource, HierarchicalSource, TensorSource, as_source
from .trainer import History, TrainConfig, latest_checkpoint, load_checkpoint, lr_at, save_checkpoint, train

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
    "TensorSource",
    "TrainConfig",
    "as_source",
    "latest_checkpoint",
    "load_checkpoint",
    "lr_at",
    "save_checkpoint",
    "train",
]
