"""Training: one generic loop (:func:`train`) for every SAE, its config, data sources and
checkpoints. Method-specific pieces are model methods or post-step hooks (STYLE.md §4)."""

from .sources import BatchSource, FeatureModelSource, TensorSource, as_source
from .trainer import History, TrainConfig, latest_checkpoint, load_checkpoint, lr_at, save_checkpoint, train

# -- post-step hooks ------------------------------------------------------------------------
# (bias adaptation: add its import here and its names to __all__ below)

__all__ = [
    "BatchSource",
    "FeatureModelSource",
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
